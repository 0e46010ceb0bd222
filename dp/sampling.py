"""CSPRNG Poisson sampling: the batches DP-SGD's accounting assumes.

Each of a round's ``steps`` batches contains each example independently with
probability q, decided by :meth:`dp.noise.SecureRandom.bernoulli`; a batch may
be empty, and is then kept empty (the step adds noise only).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from opacus.data_loader import shape_safe, wrap_collate_with_empty
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from dp.noise import SecureRandom

__all__ = ["PoissonBatchSampler", "poisson_loader"]


class PoissonBatchSampler(Sampler[list[int]]):
    """``steps`` Poisson batches: each index is in each batch with probability q."""

    def __init__(
        self, *, num_samples: int, sample_rate: float, steps: int, rng: SecureRandom
    ) -> None:
        self.num_samples = num_samples
        self.sample_rate = sample_rate
        self.steps = steps
        self._rng = rng

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            mask = self._rng.bernoulli(self.num_samples, self.sample_rate)
            yield mask.nonzero()[0].tolist()


def poisson_loader(
    dataset: Dataset[Any], *, sample_rate: float, steps: int, rng: SecureRandom
) -> DataLoader[Any]:
    """A loader of ``steps`` CSPRNG Poisson batches that tolerates empty ones."""
    num_samples = len(dataset)  # type: ignore[arg-type]
    first = dataset[0]
    return DataLoader(
        dataset,
        batch_sampler=PoissonBatchSampler(
            num_samples=num_samples, sample_rate=sample_rate, steps=steps, rng=rng
        ),
        collate_fn=wrap_collate_with_empty(
            collate_fn=default_collate,
            sample_empty_shapes=[(0, *shape_safe(x)) for x in first],
            dtypes=[getattr(x, "dtype", torch.float32) for x in first],
        ),
        # Unused with num_workers=0, but DataLoader draws a worker seed from it;
        # a private generator keeps the global torch RNG untouched.
        generator=torch.Generator(),
    )
