"""FedAvg maths: the weighted mean of updates and the server step.

`weighted_mean` is Σ n_k Δ_k / Σ n_k (McMahan et al. 2017, Algorithm 1);
`PlainAggregator` applies it in the clear and averages the clients' metrics
with the same weights; `ServerOptimizer` turns the mean update into the next
global model with a server learning rate and optional momentum (FedAvgM,
Hsu et al. 2019, "Measuring the effects of non-identical data distribution").

>>> import torch
>>> weighted_mean([torch.tensor([1.0]), torch.tensor([4.0])], [1, 2])
tensor([3.])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from core.checkpoint import refuse_foreign_state
from core.errors import CheckpointMismatchError, InvalidUpdateError, RoundAborted
from core.interfaces import AggregateResult, ClientUpdate, RoundContext, StateDict

__all__ = [
    "PlainAggregator",
    "ServerOptimizer",
    "weighted_mean",
    "weighted_metrics",
]


def weighted_mean(deltas: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Σ w_k Δ_k / Σ w_k; the weights must be non-negative with a positive sum."""
    if len(deltas) != len(weights) or not deltas:
        raise InvalidUpdateError(
            "weighted_mean needs as many weights as deltas, at least one; "
            f"found {len(deltas)} deltas and {len(weights)} weights"
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise InvalidUpdateError(
            f"weights must be >= 0 with a positive sum; found {list(weights)}"
        )
    # Accumulate in float64: with many clients a float32 running sum loses the
    # low bits of small updates.
    total = torch.zeros_like(deltas[0], dtype=torch.float64)
    for delta, weight in zip(deltas, weights, strict=True):
        total.add_(delta.to(torch.float64), alpha=float(weight))
    return (total / float(sum(weights))).to(deltas[0].dtype)


def weighted_metrics(
    metrics: Sequence[Mapping[str, float]], weights: Sequence[float]
) -> dict[str, float]:
    """Per key, the weighted mean over the clients that report that key."""
    sums: dict[str, float] = {}
    mass: dict[str, float] = {}
    for client_metrics, weight in zip(metrics, weights, strict=True):
        for key, value in client_metrics.items():
            sums[key] = sums.get(key, 0.0) + weight * value
            mass[key] = mass.get(key, 0.0) + weight
    return {k: sums[k] / mass[k] for k in sorted(sums) if mass[k] > 0}


class PlainAggregator:
    """FedAvg in the clear: the server sees every update (no secure aggregation).

    Traffic is counted as if sent over the wire: each update and each metric
    value up (4 bytes per float32 element), and the new model down to every
    aggregated client.
    """

    def aggregate(
        self, context: RoundContext, updates: Sequence[ClientUpdate]
    ) -> AggregateResult:
        """The weighted mean of `updates`, weights = example counts."""
        weights = [float(u.num_examples) for u in updates]
        if not updates or sum(weights) <= 0:
            raise RoundAborted(
                f"round {context.round_index}: no update with a positive weight"
            )
        mean = weighted_mean([u.delta for u in updates], weights)
        bytes_up = sum(
            u.delta.numel() * u.delta.element_size() + 4 * len(u.metrics)
            for u in updates
        )
        return AggregateResult(
            mean_delta=mean,
            total_weight=sum(weights),
            num_aggregated=len(updates),
            bytes_up=bytes_up,
            bytes_down=len(updates) * mean.numel() * mean.element_size(),
            metrics=weighted_metrics([u.metrics for u in updates], weights),
        )

    def state_dict(self) -> StateDict:
        """The plain aggregator is stateless."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore; refuses a non-empty state (it is someone else's)."""
        refuse_foreign_state("PlainAggregator", state)


class ServerOptimizer:
    """The FedAvg(M) server step on flat parameters.

    ``m ← β·m + Δ̄`` then ``w ← w + η·m``; with β = 0 this is plain FedAvg
    ``w ← w + η·Δ̄`` (η = 1 recovers McMahan et al.). The momentum buffer is
    the only state and is checkpointed.
    """

    def __init__(self, *, learning_rate: float, momentum: float = 0.0) -> None:
        self.learning_rate = learning_rate
        self.momentum = momentum
        self._buffer: Tensor | None = None

    def step(self, params: Tensor, mean_delta: Tensor) -> Tensor:
        """The next global parameters (a new tensor; `params` is not changed).

        A non-finite `mean_delta` raises `RoundAborted` before any state
        changes, so a poisoned round can never reach the global model.
        """
        if mean_delta.shape != params.shape:
            raise RoundAborted(
                f"mean update has shape {list(mean_delta.shape)}; the model has "
                f"{list(params.shape)}"
            )
        if not bool(torch.isfinite(mean_delta).all()):
            raise RoundAborted("the aggregated update holds NaN or inf")
        direction = mean_delta.to(params.dtype)
        if self.momentum > 0:
            if self._buffer is None:
                self._buffer = direction.clone()
            else:
                self._buffer = self._buffer * self.momentum + direction
            direction = self._buffer
        return params + self.learning_rate * direction

    def state_dict(self) -> StateDict:
        """The momentum buffer (None before the first step or without momentum)."""
        return {"momentum_buffer": self._buffer}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the momentum buffer."""
        buffer = state["momentum_buffer"]
        if buffer is not None and not isinstance(buffer, Tensor):
            raise CheckpointMismatchError(
                "momentum_buffer must be a tensor or None; found "
                f"{type(buffer).__name__}"
            )
        self._buffer = None if buffer is None else buffer.clone()
