"""Small synthetic data, models and fake plug-ins shared by the core tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from core import (
    AggregateResult,
    ClientDataset,
    ClientDeclined,
    ClientUpdate,
    LocalTrainer,
    PlainAggregator,
    RoundAborted,
    RoundContext,
    StateDict,
    TrainOutcome,
    TrainTask,
)

NUM_FEATURES = 4


def make_clients(
    num_clients: int = 4, rows: int = 24, *, seed: int = 0
) -> list[ClientDataset]:
    """Linearly separable-ish two-class data, different per client."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.tensor([1.0, -2.0, 0.5, 1.5])
    out = []
    for cid in range(num_clients):
        x = torch.randn(rows + cid, NUM_FEATURES, generator=gen)
        y = (x @ w + 0.3 * torch.randn(rows + cid, generator=gen) > 0).long()
        out.append(ClientDataset(client_id=cid, features=x, labels=y))
    return out


def make_model(seed: int = 0) -> nn.Module:
    """A two-layer MLP with dropout, so training also draws from torch's RNG."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(NUM_FEATURES, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2)
    )


class PoisoningTrainer:
    """Wraps a trainer; the listed clients return NaN (or inf) updates."""

    def __init__(self, inner: LocalTrainer, bad: Mapping[int, float]) -> None:
        self.inner = inner
        self.bad = dict(bad)

    def train(self, task: TrainTask) -> TrainOutcome:
        outcome = self.inner.train(task)
        if task.client_id in self.bad and isinstance(outcome, ClientUpdate):
            delta = outcome.delta.clone()
            delta[0] = self.bad[task.client_id]
            return ClientUpdate(
                client_id=outcome.client_id,
                delta=delta,
                num_examples=outcome.num_examples,
                metrics=outcome.metrics,
            )
        return outcome

    def state_dict(self) -> StateDict:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state)


class BudgetTrainer:
    """Like a DP trainer: each client may train `budget` times, then declines."""

    def __init__(self, inner: LocalTrainer, budget: int) -> None:
        self.inner = inner
        self.budget = budget
        self.spent: dict[int, int] = {}

    def train(self, task: TrainTask) -> TrainOutcome:
        used = self.spent.get(task.client_id, 0)
        if used >= self.budget:
            return ClientDeclined(
                client_id=task.client_id, reason="privacy budget exhausted"
            )
        self.spent[task.client_id] = used + 1
        return self.inner.train(task)

    def state_dict(self) -> StateDict:
        return {
            "inner": self.inner.state_dict(),
            "spent": [[k, v] for k, v in sorted(self.spent.items())],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.spent = {int(k): int(v) for k, v in state["spent"]}


class AbortingAggregator:
    """Aborts the listed rounds (like secure aggregation below threshold)."""

    def __init__(self, abort_rounds: Sequence[int]) -> None:
        self.abort_rounds = set(abort_rounds)
        self.plain = PlainAggregator()
        self.calls = 0

    def aggregate(
        self, context: RoundContext, updates: Sequence[ClientUpdate]
    ) -> AggregateResult:
        self.calls += 1
        if context.round_index in self.abort_rounds:
            raise RoundAborted("2 survivors, threshold 3")
        return self.plain.aggregate(context, updates)

    def state_dict(self) -> StateDict:
        return {"calls": self.calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.calls = int(state["calls"])
