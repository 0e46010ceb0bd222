"""Per-round client sampling.

Which clients train in a round is public scheduling information (every
participant learns the cohort anyway), so a seeded, non-cryptographic
generator is the right tool here: it makes runs reproducible and resumable.
It must never be used for masks, rounding bits or DP noise.

>>> sampler = ClientSampler(fraction=0.5, min_clients=2, seed=7)
>>> len(sampler.sample(range(10)))
5
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from core.interfaces import StateDict

__all__ = ["ClientSampler", "cohort_size"]


def cohort_size(available: int, fraction: float, min_clients: int) -> int:
    """``max(min_clients, round(fraction × available))``, capped at `available`."""
    return min(available, max(min_clients, round(fraction * available)))


class ClientSampler:
    """Draws a cohort without replacement from the available client ids.

    Seeded torch generator (Mersenne Twister): public randomness only, see the
    module docstring. Its state is checkpointed as a tensor.
    """

    def __init__(self, *, fraction: float, min_clients: int, seed: int) -> None:
        self.fraction = fraction
        self.min_clients = min_clients
        self._generator = torch.Generator().manual_seed(seed)

    def sample(self, available: Iterable[int]) -> tuple[int, ...]:
        """A cohort from `available`, in ascending id order."""
        pool = sorted(available)
        size = cohort_size(len(pool), self.fraction, self.min_clients)
        picks = torch.randperm(len(pool), generator=self._generator)[:size]
        return tuple(sorted(pool[i] for i in picks.tolist()))

    def state_dict(self) -> StateDict:
        """The generator state."""
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the generator state."""
        self._generator.set_state(state["generator"])
