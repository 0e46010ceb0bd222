"""Data loading: train-only standardisation, stratified splits, client datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import (
    ConfigError,
    IidPartitioner,
    load_breast_cancer_split,
    standardise,
    stratified_split,
    to_client_datasets,
)


def test_standardise_uses_training_statistics_only() -> None:
    train = np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    test = np.array([[100.0, 7.0]])
    scaled_train, scaled_test = standardise(train, test)
    assert np.allclose(scaled_train.mean(axis=0), 0)
    assert np.allclose(scaled_train[:, 0].std(), 1)
    # Test rows move by the training mean/std, whatever their own spread.
    assert np.allclose(scaled_test, [[(100 - 2) / float(np.std([0, 2, 4])), 2.0]])


def test_stratified_split_keeps_class_proportions_and_covers_rows() -> None:
    y = np.array([0] * 80 + [1] * 20)
    train, test = stratified_split(y, test_size=0.25, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    assert np.bincount(y[test]).tolist() == [20, 5]
    with pytest.raises(ConfigError, match=r"test_size must be in \(0, 1\); found 1.0"):
        stratified_split(y, test_size=1.0, seed=0)


def test_breast_cancer_split_is_offline_standardised_and_stratified() -> None:
    split = load_breast_cancer_split(test_size=0.25, seed=0)
    assert split.x_train.shape[1] == split.num_features == 30
    assert len(split.y_train) + len(split.y_test) == 569
    assert split.class_names == ("malignant", "benign")
    assert np.allclose(split.x_train.mean(axis=0), 0, atol=1e-9)
    assert not np.allclose(split.x_test.mean(axis=0), 0, atol=1e-3)


def test_client_datasets_follow_the_partition() -> None:
    x = np.arange(20, dtype=np.float64).reshape(10, 2)
    y = np.arange(10) % 2
    partition = IidPartitioner(num_partitions=3, seed=0).split({"y": y})
    clients = to_client_datasets(x, y, partition)
    assert [c.client_id for c in clients] == [0, 1, 2]
    assert [c.num_examples for c in clients] == list(partition.sizes)
    first = clients[0]
    assert first.features.dtype == torch.float32 and first.labels.dtype == torch.long
    rows = (first.features[:, 0] / 2).long()  # row r holds [2r, 2r + 1]
    assert torch.equal(first.labels, rows % 2)
