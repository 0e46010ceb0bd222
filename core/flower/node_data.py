"""An institution's own records: one CSV file on its own disk.

The file has a header row; ``label`` names the label column, whose values
are class indices 0, 1, …; every other column is a numeric feature, already
standardised the way the consortium agreed (the coordinator never sees the
rows, so it cannot do it).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from core.flower.errors import DeploymentConfigError
from core.interfaces import ClientDataset

__all__ = ["load_csv", "write_csv"]


def load_csv(path: str | Path, label: str, client_id: int = 0) -> ClientDataset:
    """Read ``path``; a one-line :class:`DeploymentConfigError` on bad input."""
    source = Path(path)
    try:
        with source.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise DeploymentConfigError(
            f"data file {str(source)!r} does not exist"
        ) from None
    if len(rows) < 2:
        raise DeploymentConfigError(f"data file {str(source)!r} has no data rows")
    header = rows[0]
    if label not in header:
        raise DeploymentConfigError(
            f"data file {str(source)!r} has no label column {label!r}; columns: "
            + ", ".join(header)
        )
    at = header.index(label)
    features: list[list[float]] = []
    labels: list[int] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DeploymentConfigError(
                f"{source}:{line}: {len(row)} values for {len(header)} columns"
            )
        try:
            y = int(row[at])
            x = [float(v) for i, v in enumerate(row) if i != at]
        except ValueError:
            raise DeploymentConfigError(
                f"{source}:{line}: features must be numbers and the label an "
                "integer class index"
            ) from None
        if y < 0 or not all(math.isfinite(v) for v in x):
            raise DeploymentConfigError(
                f"{source}:{line}: label must be >= 0 and features finite"
            )
        features.append(x)
        labels.append(y)
    return ClientDataset(
        client_id=client_id,
        features=torch.tensor(features, dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.long),
    )


def write_csv(
    path: str | Path, features: torch.Tensor, labels: torch.Tensor, label: str
) -> None:
    """Write rows in the layout :func:`load_csv` reads (tests, dry runs)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    width = features.shape[1]
    with target.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow([f"x{i}" for i in range(width)] + [label])
        for x, y in zip(features.tolist(), labels.tolist(), strict=True):
            out.writerow([repr(float(v)) for v in x] + [int(y)])
