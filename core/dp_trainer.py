"""`DPTrainer`: local training with DP-SGD, budget first, one ledger per client.

It implements `core.interfaces.Trainer` on top of `dp.PrivateClient`: every
client keeps one private client (and so one accountant, backed by its ledger)
for the whole federation, so ε accumulates across rounds and a restart
resumes from the ledger instead of from zero. Before each round the client
projects its ε after the round; when that would exceed its budget it
declines (`ClientDeclined`, permanent: ε only grows) and the loop carries on
without it.

The ledgers belong to the clients, not to a run: a trainer built on a
ledger folder that already holds charges continues them (ε starts from what
was spent, and its rounds are charged after the ledgers' last round). A
client whose ledger cannot be read (corrupted) declines permanently.

The model must already be DP-compatible: call `prepare_dp_model` once on the
initial global model, so every client trains the same architecture.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import TensorDataset

import dp
from core.errors import CheckpointMismatchError
from core.interfaces import (
    ClientDataset,
    ClientDeclined,
    ClientUpdate,
    StateDict,
    TrainOutcome,
    TrainTask,
)
from core.params import ParamSpec

__all__ = ["DPTrainer", "ledger_path", "prepare_dp_model"]

logger = logging.getLogger(__name__)


def prepare_dp_model(model: nn.Module) -> nn.Module:
    """A DP-compatible copy of `model` (Opacus fixes applied and logged)."""
    fixed, changes = dp.make_private_compatible(model)
    for change in changes:
        logger.info("DP model fix: %s", change)
    return fixed


def ledger_path(ledger_dir: Path, client_id: int) -> Path:
    """Where client `client_id` keeps its privacy ledger."""
    return ledger_dir / f"client-{client_id}.ledger.jsonl"


class DPTrainer:
    """Differentially private local training for every client of a federation.

    `clients` fixes each client's dataset size (the Poisson sample rate
    depends on it). With `noise_multiplier=None` and a `target_epsilon` in
    `config`, each client calibrates σ once for its whole planned schedule.

    Nothing leaves a client but its clipped, noised update and its example
    count (the secure-aggregation weight, public under the replace-one
    accounting): an update carries no training metric unless `config` opts in
    to ``release_loss``, and then only ``dp_train_loss``, the DP-released mean
    clipped loss charged to the same ledger. The round report gets min/max ε
    and budget left across clients from `round_metrics`.

    Rollback: `recorded_heads` are the ledger heads the coordinator last
    recorded, by ledger client id (``client-<id>``). A client whose ledger is
    behind its recorded head (truncated, emptied, replaced) declines for good,
    naming itself; `recorded_heads` (the property) then holds every client's
    latest head, and `round_details` the heads of the round's participants.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        clients: Sequence[ClientDataset],
        config: dp.DPConfig,
        ledger_dir: str | Path,
        learning_rate: float,
        optimizer: dp.LocalOptimizer = dp.LocalOptimizer.SGD,
        recorded_heads: Mapping[str, dp.LedgerHead] | None = None,
    ) -> None:
        self.config = config
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.ledger_dir = Path(ledger_dir)
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        self._model = copy.deepcopy(model)
        self._spec = ParamSpec.from_module(self._model)
        # Built up front so that a bad δ or a budget below one round's cost is
        # refused before the federation starts, naming the client.
        self._private: dict[int, dp.PrivateClient] = {}
        self._refused: dict[int, str] = {}
        for data in clients:
            if data.num_examples == 0:
                continue
            try:
                self._private[data.client_id] = dp.PrivateClient(
                    f"client-{data.client_id}",
                    data.num_examples,
                    config,
                    ledger_path(self.ledger_dir, data.client_id),
                )
            except dp.LedgerCorruptedError as exc:
                # Its spending is unknown: it must not train, the others may.
                self._refused[data.client_id] = f"privacy ledger unreadable: {exc}"
        self._heads: dict[str, dp.LedgerHead] = dict(recorded_heads or {})
        self._round_heads: tuple[int, dict[str, dp.LedgerHead]] = (0, {})
        # Ledger rounds continue after the last one any ledger holds, so a
        # rerun on the same ledgers charges its round 1 after their history.
        self._round_offset = max(
            (p.ledger.entries[-1].round for p in self._private.values()
             if p.ledger.entries),
            default=0,
        )  # fmt: skip

    @property
    def clients(self) -> Mapping[int, dp.PrivateClient]:
        """The private side of every client with a readable ledger, by id."""
        return dict(self._private)

    @property
    def round_offset(self) -> int:
        """Ledger round = federation round + this (the ledgers' earlier rounds)."""
        return self._round_offset

    @property
    def recorded_heads(self) -> dict[str, dp.LedgerHead]:
        """The latest ledger head known for each client, by ledger client id."""
        return dict(self._heads)

    def round_details(self) -> dict[str, Any]:
        """The ledger heads of the latest round's participants (JSON-safe)."""
        return {
            "ledger_heads": {
                cid: head.to_json() for cid, head in self._round_heads[1].items()
            }
        }

    def round_metrics(self) -> dict[str, float]:
        """The round report's privacy figures: `privacy_summary()`."""
        return self.privacy_summary()

    def privacy_summary(self) -> dict[str, float]:
        """Min/max ε spent and budget left across clients (for reports)."""
        spent = [c.epsilon_spent() for c in self._private.values()]
        left = [c.budget_left() for c in self._private.values()]
        if not spent:
            return {}
        return {
            "epsilon_min": min(spent),
            "epsilon_max": max(spent),
            "budget_left_min": min(left),
            "budget_left_max": max(left),
        }

    def train(self, task: TrainTask) -> TrainOutcome:
        """One private round for `task.client_id`, or a refusal with the reason."""
        if self._round_heads[0] != task.round_index:  # a new round's participants
            self._round_heads = (task.round_index, {})
        private = self._private.get(task.client_id)
        if private is None:
            return ClientDeclined(
                client_id=task.client_id,
                reason=self._refused.get(task.client_id, "no private client (no data)"),
            )
        recorded = self._heads.get(private.client_id)
        if recorded is not None:
            try:
                private.check_not_rolled_back(recorded)
            except dp.LedgerRollbackError as exc:
                # Its ledger lost charges: training would re-spend them.
                return ClientDeclined(client_id=task.client_id, reason=str(exc))
        if not private.can_train():
            return ClientDeclined(
                client_id=task.client_id,
                reason=(
                    f"privacy budget: ε would reach {private.projected_epsilon():.3f}"
                    f" > budget {self.config.epsilon_budget:g} "
                    f"(spent {private.epsilon_spent():.3f})"
                ),
            )
        model = self._model
        self._spec.load_into(model, task.global_params)
        dataset = TensorDataset(task.data.features, task.data.labels)
        try:
            result = private.train_round(
                model,
                dataset,
                round_idx=task.round_index + self._round_offset,
                lr=self.learning_rate,
                optimizer=self.optimizer,
            )
        except dp.BudgetExceededError as exc:
            return ClientDeclined(client_id=task.client_id, reason=str(exc))
        self._round_heads[1][private.client_id] = result.ledger_head
        self._heads[private.client_id] = result.ledger_head
        trained = copy.deepcopy(model)
        trained.load_state_dict(result.state_dict)
        delta = self._spec.flatten(trained) - task.global_params
        released = result.noised_loss
        return ClientUpdate(
            client_id=task.client_id,
            delta=delta,
            num_examples=task.data.num_examples,
            metrics={} if released is None else {"dp_train_loss": released},
        )

    def state_dict(self) -> StateDict:
        """The ledgers on disk are the state; the checkpoint records where,
        and how this run's rounds map to ledger rounds."""
        return {"ledger_dir": str(self.ledger_dir), "round_offset": self._round_offset}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Check the checkpoint names this trainer's ledger folder; a resumed
        run keeps the round mapping it started with."""
        if state.get("ledger_dir") != str(self.ledger_dir):
            raise CheckpointMismatchError(
                f"checkpoint's DP ledgers are in {state.get('ledger_dir')!r}; this "
                f"trainer uses {str(self.ledger_dir)!r}"
            )
        self._round_offset = int(state.get("round_offset", 0))
