"""The plug points of the federation loop: `Trainer` and `Aggregator`.

The loop in `core.federation` only talks to these two protocols and to the
frozen artefacts below, so a differentially private trainer and a secure
aggregator replace the plain ones without any change to the loop.

Data flows one way::

    TrainTask ──Trainer.train──► ClientUpdate | ClientDeclined
    RoundContext + [ClientUpdate] ──Aggregator.aggregate──► AggregateResult
    AggregateResult.mean_delta ──ServerOptimizer──► new global parameters

Guarantees the loop relies on:

* the loop never reports or keeps `ClientUpdate.metrics` or
  `ClientUpdate.num_examples`: beyond the validity check below, which yields
  only accept or reject, per-client values reach the server only through the
  aggregator, and the loop reports aggregate values from
  `AggregateResult.metrics` only;
* before an update reaches the aggregator the loop checks, on the client side
  of the boundary, that its delta is finite and has the expected length, its
  example count positive and its metrics finite, so a NaN, an inf or a
  weightless update never reaches an aggregator or the global model;
* an `Aggregator` that raises `core.errors.RoundAborted` leaves the round
  without effect: the global model and server optimizer state are unchanged;
* `state_dict()` returns only tensors and plain Python values (dict, list,
  tuple, str, int, float, bool, None), because checkpoints are read back with
  `torch.load(..., weights_only=True)` and nothing else is ever unpickled.

>>> import torch
>>> u = ClientUpdate(client_id=3, delta=torch.zeros(4), num_examples=10, metrics={})
>>> u.num_examples
10
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

import torch
from torch import Tensor

from core.errors import DataError, InvalidUpdateError

__all__ = [
    "AggregateResult",
    "Aggregator",
    "ClientDataset",
    "ClientDeclined",
    "ClientUpdate",
    "ReportsRoundDetails",
    "ReportsRoundMetrics",
    "RoundContext",
    "StateDict",
    "TrainOutcome",
    "TrainTask",
    "Trainer",
    "round_details",
]

#: What `state_dict()` returns: tensors and plain Python values only.
StateDict: TypeAlias = dict[str, Any]


def _check_flat(name: str, tensor: Tensor) -> None:
    if tensor.dim() != 1:
        raise InvalidUpdateError(
            f"{name} must be a 1-D tensor; found shape {tuple(tensor.shape)}"
        )


def _frozen_metrics(metrics: Mapping[str, float]) -> Mapping[str, float]:
    # A private copy, so a caller mutating its dict cannot change an artefact.
    return {str(k): float(v) for k, v in metrics.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientDataset:
    """One client's local examples: `features[i]` has label `labels[i]`.

    Tensors rather than a `DataLoader`, so every trainer (plain or DP with
    Poisson sampling) builds the batching it needs from the same source.
    """

    client_id: int
    features: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.features.shape[0] != self.labels.shape[0]:
            raise DataError(
                f"ClientDataset {self.client_id}: features has "
                f"{self.features.shape[0]} rows but labels has "
                f"{self.labels.shape[0]}; they must be equal"
            )

    @property
    def num_examples(self) -> int:
        """How many examples the client holds (0 for a client with no data)."""
        return int(self.labels.shape[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainTask:
    """What a client receives in a round: the global model and its own data."""

    round_index: int
    client_id: int
    global_params: Tensor
    data: ClientDataset


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientUpdate:
    """A client's contribution: Δ = w_local − w_global as one flat tensor.

    `num_examples` is the FedAvg weight and `metrics` the client's training
    metrics (e.g. ``train_loss``, ``train_accuracy``, ``epsilon``). Both are
    private to the client: only an aggregator may combine them.
    """

    client_id: int
    delta: Tensor
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_flat("ClientUpdate.delta", self.delta)
        if self.num_examples < 0:
            raise InvalidUpdateError(
                f"ClientUpdate.num_examples must be >= 0; found {self.num_examples}"
            )
        object.__setattr__(self, "metrics", _frozen_metrics(self.metrics))

    def defect(self, client_id: int, global_params: Tensor) -> str | None:
        """Why this update must not be aggregated, or None when it may.

        The check stands on the client side of the aggregation boundary: it
        sees only this client's own update and yields only accept or reject.
        """
        if self.client_id != client_id:
            return f"update names client {self.client_id}"
        if self.delta.shape != global_params.shape:
            return (
                f"update has {self.delta.numel()} elements; the model has "
                f"{global_params.numel()}"
            )
        if not self.delta.is_floating_point():
            return f"update has non-float dtype {self.delta.dtype}"
        if not bool(torch.isfinite(self.delta).all()):
            return "update holds NaN or inf"
        if self.num_examples <= 0:
            return "update claims no examples (a weight of 0)"
        bad = sorted(k for k, v in self.metrics.items() if not math.isfinite(v))
        if bad:
            return f"metric {bad[0]} is NaN or inf"
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientDeclined:
    """A client refused to train this round, and why.

    `permanent=True` (the default) means it will never train again in this
    federation, e.g. its privacy budget would be exceeded (ε only grows) or it
    holds no data; the loop stops sampling it, and stops the federation once
    no client is left. `permanent=False` only skips this round.
    """

    client_id: int
    reason: str
    permanent: bool = True


#: What `Trainer.train` returns.
TrainOutcome: TypeAlias = ClientUpdate | ClientDeclined


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundContext:
    """Public facts about a round, handed to the aggregator.

    `cohort` lists every sampled client (including ones that later declined
    or were rejected), in sampling order; `global_params` is the flat model
    the clients trained from (a secure aggregator binds its hash to the
    session).
    """

    round_index: int
    cohort: tuple[int, ...]
    global_params: Tensor


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateResult:
    """The server's view of a round: a weighted mean and aggregate metrics.

    `mean_delta` is Σ n_k Δ_k / Σ n_k over the `num_aggregated` clients whose
    updates were combined, `total_weight` is Σ n_k, `dropped` the client ids
    whose contribution was lost in aggregation (e.g. a secure-aggregation
    dropout), `bytes_up`/`bytes_down` the traffic the aggregation cost, and
    `metrics` the aggregate of the clients' metrics (the only per-round
    training metrics the loop ever sees).
    """

    mean_delta: Tensor
    total_weight: float
    num_aggregated: int
    dropped: tuple[int, ...] = ()
    bytes_up: int = 0
    bytes_down: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_flat("AggregateResult.mean_delta", self.mean_delta)
        if self.num_aggregated < 1:
            raise InvalidUpdateError(
                "AggregateResult.num_aggregated must be >= 1 (raise RoundAborted "
                f"when nothing was aggregated); found {self.num_aggregated}"
            )
        object.__setattr__(self, "metrics", _frozen_metrics(self.metrics))


@runtime_checkable
class Trainer(Protocol):
    """Runs one client's local training.

    Guarantees an implementation must keep:

    * `train` returns a `ClientUpdate` whose `delta` has the same length and
      dtype as `task.global_params`, or a `ClientDeclined` with a reason; it
      never mutates `task.global_params`;
    * a trainer that consumes randomness keeps its generator state in
      `state_dict()`, so a resumed run is bit-identical to an uninterrupted one;
    * `load_state_dict(state_dict())` restores the trainer exactly.
    """

    def train(self, task: TrainTask) -> TrainOutcome:
        """Train on `task.data` from `task.global_params`; return Δ or a refusal."""
        ...

    def state_dict(self) -> StateDict:
        """Everything needed to resume, as tensors and plain values."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        ...


@runtime_checkable
class Aggregator(Protocol):
    """Combines the round's client updates into a weighted mean.

    Guarantees an implementation must keep:

    * `aggregate` returns Σ n_k Δ_k / Σ n_k over the updates it could combine
      (a secure aggregator recovers this from masked inputs without learning
      any single Δ_k or n_k), and the aggregate of the clients' metrics;
    * when the round cannot produce a mean it raises
      `core.errors.RoundAborted` (or a subclass) and the loop carries on;
    * `updates` is never mutated; `state_dict`/`load_state_dict` as for
      `Trainer`.
    """

    def aggregate(
        self, context: RoundContext, updates: Sequence[ClientUpdate]
    ) -> AggregateResult:
        """Aggregate `updates` (at least one) for the round in `context`."""
        ...

    def state_dict(self) -> StateDict:
        """Everything needed to resume, as tensors and plain values."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        ...


@runtime_checkable
class ReportsRoundMetrics(Protocol):
    """Optional for a trainer: public per-round figures for the round's report.

    The DP trainer reports the min/max ε spent and budget left across clients
    here; they are audit figures (each client's ledger holds its own ε), not
    training metrics, so they do not travel through the aggregator.
    """

    def round_metrics(self) -> Mapping[str, float]:
        """Figures to add to the round's console line and ``metrics.jsonl``."""
        ...


@runtime_checkable
class ReportsRoundDetails(Protocol):
    """Optional for a trainer: public per-round records that are not numbers.

    The DP trainer reports the ledger head (sequence number and entry hash)
    of each client that trained in the round here, so the coordinator's
    ``metrics.jsonl`` records them every round. Values must be JSON-safe.
    """

    def round_details(self) -> Mapping[str, Any]:
        """Top-level members to add to the round's ``metrics.jsonl`` line."""
        ...


def round_details(trainer: object) -> dict[str, Any]:
    """`trainer`'s `ReportsRoundDetails.round_details`, or nothing."""
    if isinstance(trainer, ReportsRoundDetails):
        return dict(trainer.round_details())
    return {}
