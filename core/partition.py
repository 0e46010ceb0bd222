"""Seeded, deterministic ways to split a dataset across simulated clients.

Names and parameters mirror flwr-datasets (`partition_by`, `alpha`,
`min_partition_size`, `self_balancing`, `shuffle`, `seed`) so users of Flower
recognise them, without depending on HF datasets. A partitioner is a frozen
value; `split(table)` takes columns as a mapping of equal-length arrays and
returns a `Partition`: one index array per client, covering every row
exactly once. The same seed always gives the same split (numpy PCG64).

* `IidPartitioner`: a random permutation cut into near-equal parts;
* `DirichletPartitioner`: label skew, each class split by p ~ Dir(α);
  the whole draw is repeated until every part holds `min_partition_size`
  rows (Hsu et al. 2019; NIID-Bench, Li et al. 2022);
* `QuantitySkewPartitioner`: sizes ∝ p ~ Dir(α), labels IID;
* `NaturalIdPartitioner`: one part per distinct value of a column (hospital,
  state): the realistic cross-silo split.

>>> import numpy as np
>>> p = IidPartitioner(num_partitions=3, seed=0).split({"y": np.arange(10)})
>>> p.sizes
(4, 3, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from core import _validate as v
from core.errors import ConfigError, PartitionError

__all__ = [
    "DirichletPartitioner",
    "IidPartitioner",
    "NaturalIdPartitioner",
    "Partition",
    "Partitioner",
    "QuantitySkewPartitioner",
]

IndexArray = npt.NDArray[np.int64]
Table = Mapping[str, npt.ArrayLike]


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    """One index array per client (`indices[k]` are client k's rows)."""

    indices: tuple[IndexArray, ...]
    ids: tuple[str, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Rows per client."""
        return tuple(len(i) for i in self.indices)

    def label_counts(self, labels: npt.ArrayLike) -> dict[str, dict[str, int]]:
        """Per client, how many rows of each label (for the run header)."""
        values = np.asarray(labels)
        counts: dict[str, dict[str, int]] = {}
        for pid, idx in zip(self.ids, self.indices, strict=True):
            keys, freq = np.unique(values[idx], return_counts=True)
            counts[pid] = {str(k): int(c) for k, c in zip(keys, freq, strict=True)}
        return counts


class Partitioner(Protocol):
    """Anything that splits a table's rows across clients."""

    def split(self, table: Table) -> Partition:
        """A partition of the rows of `table`."""
        ...


def _num_rows(table: Table) -> int:
    lengths = {name: len(np.asarray(col)) for name, col in table.items()}
    if not lengths or len(set(lengths.values())) != 1:
        raise ConfigError(
            f"table must hold at least one column, all of one length; found {lengths}"
        )
    return next(iter(lengths.values()))


def _column(owner: str, table: Table, name: str) -> npt.NDArray[np.generic]:
    if name not in table:
        raise ConfigError(
            f"{owner}.partition_by must name a column of the table "
            f"(one of {sorted(table)}); found {name!r}"
        )
    return np.asarray(table[name])


def _finish(
    parts: Sequence[npt.ArrayLike], rng: np.random.Generator, shuffle: bool
) -> tuple[IndexArray, ...]:
    out = []
    for part in parts:
        arr = np.asarray(part, dtype=np.int64)
        out.append(rng.permutation(arr) if shuffle else np.sort(arr))
    return tuple(out)


def _cut(indices: IndexArray, proportions: npt.NDArray[np.float64]) -> list[IndexArray]:
    cuts = (np.cumsum(proportions) * len(indices)).astype(np.int64)[:-1]
    return np.split(indices, cuts)


def _check_fits(k: int, min_size: int, n: int) -> None:
    if k * min_size > n:
        raise PartitionError(
            f"{k} partitions of at least {min_size} rows need "
            f"{k * min_size} rows; the table has {n}"
        )


class _Resampled(Protocol):
    """The fields of a partitioner that redraws until every part is large
    enough (`DirichletPartitioner`, `QuantitySkewPartitioner`)."""

    @property
    def num_partitions(self) -> int: ...
    @property
    def min_partition_size(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def max_tries(self) -> int: ...
    @property
    def shuffle(self) -> bool: ...
    @property
    def alpha(self) -> float | tuple[float, ...]: ...


def _check_resampled(p: _Resampled) -> None:
    owner = type(p).__name__
    v.check_int(owner, "num_partitions", p.num_partitions, minimum=1)
    v.check_int(owner, "min_partition_size", p.min_partition_size, minimum=0)
    v.check_int(owner, "seed", p.seed, minimum=0)
    v.check_int(owner, "max_tries", p.max_tries, minimum=1)


def _resample_until_min(
    p: _Resampled, draw: Callable[[np.random.Generator], list[IndexArray]]
) -> Partition:
    # Repeat the whole draw (as flwr-datasets does) rather than patching
    # small parts, so the accepted split still follows the Dirichlet law
    # conditioned on the minimum size.
    rng = np.random.default_rng(p.seed)
    for _ in range(p.max_tries):
        parts = draw(rng)
        if min(len(part) for part in parts) >= p.min_partition_size:
            return Partition(
                indices=_finish(parts, rng, p.shuffle),
                ids=tuple(str(j) for j in range(len(parts))),
            )
    raise PartitionError(
        f"{type(p).__name__} gave some partition fewer than "
        f"min_partition_size={p.min_partition_size} rows in all "
        f"{p.max_tries} tries (alpha={p.alpha}); raise alpha or lower "
        "min_partition_size"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class IidPartitioner:
    """Uniformly random, near-equal parts."""

    num_partitions: int
    seed: int = 42

    def __post_init__(self) -> None:
        v.check_int("IidPartitioner", "num_partitions", self.num_partitions, minimum=1)
        v.check_int("IidPartitioner", "seed", self.seed, minimum=0)

    def split(self, table: Table) -> Partition:
        """Permute the rows and cut them into `num_partitions` parts."""
        n = _num_rows(table)
        if n < self.num_partitions:
            raise PartitionError(
                f"IidPartitioner needs at least {self.num_partitions} rows; found {n}"
            )
        rng = np.random.default_rng(self.seed)
        parts = np.array_split(rng.permutation(n), self.num_partitions)
        return Partition(
            indices=tuple(p.astype(np.int64) for p in parts),
            ids=tuple(str(k) for k in range(self.num_partitions)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DirichletPartitioner:
    """Label skew: each class is split across clients by p ~ Dir(alpha).

    `alpha` is a scalar or one value per client; small values give extreme
    skew (0.1), large ones approach IID (100). `self_balancing` stops giving
    rows of later classes to clients already above the average size. The
    whole draw is repeated until every client holds `min_partition_size`
    rows, at most `max_tries` times, then `PartitionError` is raised.
    """

    num_partitions: int
    partition_by: str
    alpha: float | tuple[float, ...]
    min_partition_size: int = 10
    self_balancing: bool = False
    shuffle: bool = True
    seed: int = 42
    max_tries: int = 1000

    def __post_init__(self) -> None:
        owner = "DirichletPartitioner"
        _check_resampled(self)
        alphas = self.alpha if isinstance(self.alpha, tuple) else (self.alpha,)
        if isinstance(self.alpha, tuple) and len(alphas) != self.num_partitions:
            raise ConfigError(
                f"{owner}.alpha must be a number or {self.num_partitions} numbers "
                f"(one per partition); found {len(alphas)}"
            )
        for a in alphas:
            v.check_float(owner, "alpha", a, low=0, low_open=True)

    def split(self, table: Table) -> Partition:
        """Split the rows by label skew; see the class docstring."""
        labels = _column("DirichletPartitioner", table, self.partition_by)
        n, k = len(labels), self.num_partitions
        _check_fits(k, self.min_partition_size, n)
        alpha = np.broadcast_to(np.asarray(self.alpha, dtype=np.float64), (k,))
        by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]

        def draw(rng: np.random.Generator) -> list[IndexArray]:
            parts: list[list[IndexArray]] = [[] for _ in range(k)]
            sizes = np.zeros(k, dtype=np.int64)
            for class_rows in by_class:
                rows = rng.permutation(class_rows).astype(np.int64)
                p = rng.dirichlet(alpha)
                if self.self_balancing:
                    p = np.where(sizes < n / k, p, 0.0)
                    p = p / p.sum() if p.sum() > 0 else np.full(k, 1.0 / k)
                for j, chunk in enumerate(_cut(rows, p)):
                    parts[j].append(chunk)
                    sizes[j] += len(chunk)
            return [np.concatenate(p) for p in parts]

        return _resample_until_min(self, draw)


@dataclass(frozen=True, slots=True, kw_only=True)
class QuantitySkewPartitioner:
    """Unequal sizes ∝ p ~ Dir(alpha) with IID labels; resampled until
    every part holds `min_partition_size` rows (at most `max_tries` draws)."""

    num_partitions: int
    alpha: float = 1.0
    min_partition_size: int = 10
    shuffle: bool = True
    seed: int = 42
    max_tries: int = 1000

    def __post_init__(self) -> None:
        _check_resampled(self)
        v.check_float(
            "QuantitySkewPartitioner", "alpha", self.alpha, low=0, low_open=True
        )

    def split(self, table: Table) -> Partition:
        """Permute the rows and cut them at Dirichlet-distributed sizes."""
        n, k = _num_rows(table), self.num_partitions
        _check_fits(k, self.min_partition_size, n)

        def draw(rng: np.random.Generator) -> list[IndexArray]:
            rows = rng.permutation(n).astype(np.int64)
            return _cut(rows, rng.dirichlet(np.full(k, self.alpha)))

        return _resample_until_min(self, draw)


@dataclass(frozen=True, slots=True, kw_only=True)
class NaturalIdPartitioner:
    """One partition per distinct value of the `partition_by` column, in
    sorted value order (e.g. one per hospital); no randomness."""

    partition_by: str

    def split(self, table: Table) -> Partition:
        """Group the rows by the column's value."""
        values = _column("NaturalIdPartitioner", table, self.partition_by)
        ids = np.unique(values)
        return Partition(
            indices=tuple(np.flatnonzero(values == i).astype(np.int64) for i in ids),
            ids=tuple(str(i) for i in ids),
        )
