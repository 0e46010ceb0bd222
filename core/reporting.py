"""Per-round reporting: one console line, one JSON line, a progress bar.

`RoundRecord` is what the loop knows about a finished round: only public
facts (the cohort, who declined or was rejected and why) and aggregate values
(`metrics` come from `AggregateResult.metrics`, never from a single client).
`format_round` renders it as one console line; fields supplied by a trainer
or aggregator (ε, clipped fraction, …) are appended in name order.
`MetricsLog` appends it to ``metrics.jsonl`` after a header describing the
run. `ConsoleReporter` prints the lines and, when tqdm is importable and the
output is a terminal, keeps a progress bar over the rounds.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import torch

__all__ = [
    "CLIP_WARNING_FRACTION",
    "ConsoleReporter",
    "MetricsLog",
    "RoundRecord",
    "format_round",
]

_TRAIN_KEYS = ("train_loss", "train_accuracy")

#: The members of every round's JSON line; `RoundRecord.details` cannot replace them.
_STANDARD = frozenset({
    "type", "round", "rounds", "cohort", "aggregated", "skipped", "dropped",
    "aborted", "eval_loss", "eval_accuracy", "metrics", "bytes_up", "bytes_down",
    "seconds",
})  # fmt: skip

#: Above this share of clipped update coordinates (an aggregator's
#: ``clipped_fraction``), a round line carries a warning: the mean is distorted.
CLIP_WARNING_FRACTION = 0.01


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundRecord:
    """The outcome of one round, as reported on the console and in JSON."""

    round_index: int
    total_rounds: int
    cohort: tuple[int, ...]
    num_aggregated: int
    skipped: Mapping[int, str] = field(default_factory=dict)
    dropped: tuple[int, ...] = ()
    aborted: str | None = None
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    seconds: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite floats become null); `details` (a
        trainer's JSON-safe records, e.g. ledger heads) add top-level members
        and never replace the standard ones."""
        return {
            **{k: v for k, v in self.details.items() if k not in _STANDARD},
            "type": "round",
            "round": self.round_index,
            "rounds": self.total_rounds,
            "cohort": list(self.cohort),
            "aggregated": self.num_aggregated,
            "skipped": {str(k): v for k, v in sorted(self.skipped.items())},
            "dropped": list(self.dropped),
            "aborted": self.aborted,
            "eval_loss": _json_float(self.eval_loss),
            "eval_accuracy": _json_float(self.eval_accuracy),
            "metrics": {k: _json_float(v) for k, v in sorted(self.metrics.items())},
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "seconds": round(self.seconds, 4),
        }


def _json_float(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def format_round(record: RoundRecord) -> str:
    """One console line for a round."""
    width = len(str(record.total_rounds))
    parts = [f"[round {record.round_index:>{width}}/{record.total_rounds}]"]
    if record.eval_loss is not None:
        acc = "" if record.eval_accuracy is None else f" acc {record.eval_accuracy:.4f}"
        parts.append(f"test loss {record.eval_loss:.4f}{acc}")
    if "train_loss" in record.metrics:
        parts.append(f"train loss {record.metrics['train_loss']:.4f}")
    parts.append(f"clients {record.num_aggregated}/{len(record.cohort)}")
    parts.append(f"dropped {len(record.dropped)}")
    if record.skipped:
        parts.append(f"skipped {len(record.skipped)}")
    if record.bytes_up or record.bytes_down:
        parts.append(f"up {_bytes(record.bytes_up)} down {_bytes(record.bytes_down)}")
    extras = [
        f"{k} {v:.4g}"
        for k, v in sorted(record.metrics.items())
        if k not in _TRAIN_KEYS
    ]
    parts.extend(extras)
    clipped = record.metrics.get("clipped_fraction", 0.0)
    if clipped > CLIP_WARNING_FRACTION:
        parts.append(
            f"WARNING: {100 * clipped:.1f} % of update coordinates clipped "
            f"(> {100 * CLIP_WARNING_FRACTION:g} %): the mean is distorted; "
            "raise the clip"
        )
    if record.aborted is not None:
        parts.append(f"ABORTED: {record.aborted}")
    parts.append(f"{record.seconds:.2f} s")
    return f"{parts[0]} {' | '.join(parts[1:])}"


class MetricsLog:
    """Appends JSON lines to a file: a header per run start, then one per round.

    Each line is flushed and fsynced, so the log after a crash holds every
    round that finished; a resumed run appends a new header with
    ``"resumed_from_round"`` rather than rewriting history.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write_header(self, info: Mapping[str, Any]) -> None:
        """Append a run header: `info` plus the start time and versions."""
        self.write_event(
            "header",
            {
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "versions": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                },
                **info,
            },
        )

    def write_event(self, kind: str, info: Mapping[str, Any]) -> None:
        """Append a line of type `kind` (e.g. ``"stopped"``)."""
        self._append({"type": kind, **info})

    def write_round(self, record: RoundRecord) -> None:
        """Append one round."""
        self._append(record.to_json())

    def _append(self, obj: Mapping[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(obj, sort_keys=False, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class ConsoleReporter:
    """Prints round lines (unless quiet) and drives an optional progress bar.

    tqdm is an optional extra: when it is missing, or stderr (where the bar
    draws) is not a terminal, there is simply no bar.
    """

    def __init__(self, *, stream: TextIO | None = None, quiet: bool = False) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._quiet = quiet
        self._bar: Any = None

    def start(self, *, first_round: int, total_rounds: int) -> None:
        """Open the progress bar for rounds `first_round`..`total_rounds`."""
        # The bar draws on stderr, so stdout stays clean round lines (or JSON)
        # for scripts; it is shown only when stderr is a terminal.
        if self._quiet or not sys.stderr.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(
            total=total_rounds,
            initial=first_round - 1,
            desc="rounds",
            unit="round",
            leave=False,
            file=sys.stderr,
        )

    def round(self, record: RoundRecord) -> None:
        """Report a finished round."""
        self.message(format_round(record))
        if self._bar is not None:
            self._bar.update(1)

    def message(self, text: str) -> None:
        """Print a line above the bar (nothing when quiet)."""
        if self._quiet:
            return
        if self._bar is not None:
            self._bar.write(text, file=self._stream)
        else:
            print(text, file=self._stream, flush=True)

    def close(self) -> None:
        """Close the progress bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
