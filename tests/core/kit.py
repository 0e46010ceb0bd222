"""The core tests' kit: synthetic clients, models, a federation builder and
fake plug-ins (a poisoning trainer, a budgeted one, an aborting aggregator).

`tests/core/conftest.py` hands one `Kit` to every test as the ``kit``
fixture; nothing else in tests/core builds these by hand.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core import (
    AggregateResult,
    Aggregator,
    ClientDataset,
    ClientDeclined,
    ClientUpdate,
    ConsoleReporter,
    Federation,
    FederationConfig,
    LocalTrainer,
    LocalTrainingConfig,
    PlainAggregator,
    RoundAborted,
    RoundContext,
    StateDict,
    Trainer,
    TrainOutcome,
    TrainTask,
)


class PoisoningTrainer:
    """Wraps a trainer; the listed clients return a NaN (or inf) coordinate,
    or (with a key in `zero_weight`) an update claiming zero examples."""

    def __init__(
        self,
        inner: Trainer,
        bad: Mapping[int, float],
        *,
        bad_metric: Mapping[int, float] | None = None,
        zero_weight: Sequence[int] = (),
    ) -> None:
        self.inner = inner
        self.bad = dict(bad)
        self.bad_metric = dict(bad_metric or {})
        self.zero_weight = set(zero_weight)

    def train(self, task: TrainTask) -> TrainOutcome:
        outcome = self.inner.train(task)
        cid = task.client_id
        if not isinstance(outcome, ClientUpdate):
            return outcome
        delta = outcome.delta.clone()
        if cid in self.bad:
            delta[0] = self.bad[cid]
        metrics = dict(outcome.metrics)
        if cid in self.bad_metric:
            metrics["train_loss"] = self.bad_metric[cid]
        return ClientUpdate(
            client_id=outcome.client_id,
            delta=delta,
            num_examples=0 if cid in self.zero_weight else outcome.num_examples,
            metrics=metrics,
        )

    def state_dict(self) -> StateDict:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state)


class BudgetTrainer:
    """Like a DP trainer: each client may train `budget` times, then declines."""

    def __init__(self, inner: Trainer, budget: int) -> None:
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


class Kit:
    """Builders shared by the core tests (see the module docstring)."""

    num_features = 4
    local = LocalTrainingConfig(local_epochs=1, batch_size=8, learning_rate=0.1)
    PoisoningTrainer = PoisoningTrainer
    BudgetTrainer = BudgetTrainer
    AbortingAggregator = AbortingAggregator

    def clients(
        self, num_clients: int = 4, rows: int = 24, *, seed: int = 0
    ) -> list[ClientDataset]:
        """Linearly separable-ish two-class data, different per client."""
        gen = torch.Generator().manual_seed(seed)
        w = torch.tensor([1.0, -2.0, 0.5, 1.5])
        out = []
        for cid in range(num_clients):
            x = torch.randn(rows + cid, self.num_features, generator=gen)
            y = (x @ w + 0.3 * torch.randn(rows + cid, generator=gen) > 0).long()
            out.append(ClientDataset(client_id=cid, features=x, labels=y))
        return out

    def empty_client(self, client_id: int) -> ClientDataset:
        """A client that holds no rows."""
        return ClientDataset(
            client_id=client_id,
            features=torch.empty(0, self.num_features),
            labels=torch.empty(0, dtype=torch.long),
        )

    def model(self, seed: int = 0) -> nn.Module:
        """A two-layer MLP with dropout, so training also draws from torch's RNG."""
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(self.num_features, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2)
        )

    def trainer(self, model: nn.Module, **config: Any) -> LocalTrainer:
        """A plain trainer (the kit's `local` config unless overridden)."""
        seed = int(config.pop("seed", 0))
        local = LocalTrainingConfig(**{**_fields(self.local), **config})
        return LocalTrainer(model, config=local, seed=seed)

    def federation(
        self,
        *,
        rounds: int = 2,
        model: nn.Module | None = None,
        clients: list[ClientDataset] | None = None,
        trainer: Trainer | None = None,
        aggregator: Aggregator | None = None,
        run_dir: Path | None = None,
        stream: io.StringIO | None = None,
        **config: Any,
    ) -> Federation:
        """A federation of the kit's clients with plain training and sums."""
        model = model if model is not None else self.model()
        return Federation(
            model=model,
            clients=clients if clients is not None else self.clients(4),
            trainer=trainer or self.trainer(model),
            aggregator=aggregator or PlainAggregator(),
            config=FederationConfig(rounds=rounds, **config),
            test_data=self.clients(1, rows=50, seed=99)[0],
            run_dir=run_dir,
            reporter=ConsoleReporter(stream=stream or io.StringIO()),
        )


def _fields(config: LocalTrainingConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}
