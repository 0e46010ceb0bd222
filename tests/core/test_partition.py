"""Partitioners: exact coverage, minimum sizes, determinism, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import (
    ConfigError,
    DirichletPartitioner,
    IidPartitioner,
    NaturalIdPartitioner,
    Partition,
    PartitionError,
    QuantitySkewPartitioner,
)


def assert_exact_cover(partition: Partition, n: int) -> None:
    merged = np.concatenate(partition.indices)
    assert merged.dtype == np.int64
    assert np.array_equal(np.sort(merged), np.arange(n)), "not every row once"


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(20, 400),
    k=st.integers(1, 8),
    classes=st.integers(1, 5),
    alpha=st.sampled_from([0.1, 0.5, 1.0, 100.0]),
    seed=st.integers(0, 2**32 - 1),
    balancing=st.booleans(),
)
def test_dirichlet_covers_every_row_once_and_honours_min_size(
    n: int, k: int, classes: int, alpha: float, seed: int, balancing: bool
) -> None:
    labels = np.random.default_rng(seed).integers(0, classes, n)
    # Tiny alpha with a tight minimum is legitimately infeasible (PartitionError,
    # tested below); here the minimum is one that resampling can meet.
    min_size = min(5, n // (4 * k)) if alpha >= 0.5 else 0
    p = DirichletPartitioner(
        num_partitions=k,
        partition_by="label",
        alpha=alpha,
        min_partition_size=min_size,
        self_balancing=balancing,
        seed=seed,
    ).split({"label": labels})
    assert len(p.indices) == k
    assert_exact_cover(p, n)
    assert min(p.sizes) >= min_size


@settings(max_examples=30, deadline=None)
@given(n=st.integers(10, 300), k=st.integers(1, 10), seed=st.integers(0, 10**6))
def test_iid_and_quantity_skew_cover_every_row_once(n: int, k: int, seed: int) -> None:
    table = {"x": np.zeros(n)}
    iid = IidPartitioner(num_partitions=k, seed=seed).split(table)
    assert_exact_cover(iid, n)
    assert max(iid.sizes) - min(iid.sizes) <= 1
    min_size = n // (3 * k)
    skew = QuantitySkewPartitioner(
        num_partitions=k, alpha=1.0, min_partition_size=min_size, seed=seed
    ).split(table)
    assert_exact_cover(skew, n)
    assert min(skew.sizes) >= min_size


def test_natural_partition_groups_by_column_value() -> None:
    hospital = np.array(["b", "a", "b", "c", "a", "b"])
    p = NaturalIdPartitioner(partition_by="hospital").split({"hospital": hospital})
    assert p.ids == ("a", "b", "c")
    assert [idx.tolist() for idx in p.indices] == [[1, 4], [0, 2, 5], [3]]
    assert_exact_cover(p, 6)


def test_same_seed_same_split_other_seed_other_split() -> None:
    labels = np.repeat([0, 1, 2], 50)

    def split(seed: int) -> Partition:
        return DirichletPartitioner(
            num_partitions=4, partition_by="y", alpha=0.5, seed=seed
        ).split({"y": labels})

    a, b, c = split(1), split(1), split(2)
    assert all(np.array_equal(x, y) for x, y in zip(a.indices, b.indices, strict=True))
    assert any(
        not np.array_equal(x, y) for x, y in zip(a.indices, c.indices, strict=True)
    )


def test_small_alpha_skews_labels_and_label_counts_report_it() -> None:
    labels = np.repeat([0, 1], 200)
    p = DirichletPartitioner(
        num_partitions=5, partition_by="y", alpha=0.1, min_partition_size=10, seed=0
    ).split({"y": labels})
    assert min(p.sizes) >= 10  # met by resampling the whole draw
    counts = p.label_counts(labels)
    assert sum(sum(c.values()) for c in counts.values()) == 400
    shares = [c.get("1", 0) / sum(c.values()) for c in counts.values()]
    assert max(shares) - min(shares) > 0.5  # far from the IID 50 %


def test_unreachable_min_size_raises_with_advice() -> None:
    labels = np.repeat([0, 1], 60)
    with pytest.raises(PartitionError, match=r"in all 3 tries.*raise alpha or lower"):
        DirichletPartitioner(
            num_partitions=6,
            partition_by="y",
            alpha=0.01,
            min_partition_size=19,
            seed=0,
            max_tries=3,
        ).split({"y": labels})
    with pytest.raises(PartitionError, match="need 140 rows; the table has 120"):
        DirichletPartitioner(
            num_partitions=7, partition_by="y", alpha=1.0, min_partition_size=20
        ).split({"y": labels})


def test_bad_fields_name_the_field() -> None:
    with pytest.raises(
        ConfigError,
        match="partition_by must name a column of the "
        r"table \(one of \['label'\]\); found 'hospital'",
    ):
        NaturalIdPartitioner(partition_by="hospital").split({"label": np.zeros(3)})
    with pytest.raises(ConfigError, match=r"alpha must be in \(0, inf\]; found -1"):
        DirichletPartitioner(num_partitions=2, partition_by="y", alpha=-1)
    with pytest.raises(ConfigError, match="alpha must be a number or 3 numbers"):
        DirichletPartitioner(num_partitions=3, partition_by="y", alpha=(1.0, 2.0))
    with pytest.raises(ConfigError, match="num_partitions must be >= 1; found 0"):
        IidPartitioner(num_partitions=0)
    with pytest.raises(PartitionError, match="needs at least 5 rows; found 3"):
        IidPartitioner(num_partitions=5).split({"y": np.zeros(3)})
