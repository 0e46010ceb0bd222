"""The federation loop: sample, train, aggregate, step, evaluate, checkpoint.

`Federation` owns the global model (as one flat tensor), the round counter,
the client sampler and the server optimizer. Local training is delegated to a
`core.interfaces.Trainer` and aggregation to a `core.interfaces.Aggregator`,
so the DP trainer and the secure aggregator plug in without touching it.

What a round does, and what it does on bad input:

1. sample a cohort from the clients still able to train;
2. skip a client with no data (logged; it is never sampled again);
3. ask the trainer; a `ClientDeclined` is logged, and a permanent one retires
   the client; once no client is left the run stops with a final message;
4. reject an update whose delta is not finite or has the wrong length, whose
   example count is 0, or whose metrics are not finite (logged as a skipped
   client; it never reaches the aggregator, let alone the global model);
5. aggregate; a `RoundAborted` is logged and the global model is unchanged;
6. apply the server step, evaluate on the held-out set, report one console
   line and one ``metrics.jsonl`` line, and checkpoint atomically.

Per-client metrics and example counts are never reported or kept here: step
4 only accepts or rejects them (a check a client makes of its own update),
and the loop reports aggregate training metrics from
`AggregateResult.metrics` only.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.aggregation import ServerOptimizer
from core.checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from core.config import FederationConfig
from core.errors import (
    CheckpointMismatchError,
    ConfigError,
    FederationError,
    RoundAborted,
)
from core.evaluation import EvalResult, LossFn, evaluate
from core.interfaces import (
    AggregateResult,
    Aggregator,
    ClientDataset,
    ClientDeclined,
    ClientUpdate,
    ReportsRoundMetrics,
    RoundContext,
    Trainer,
    TrainTask,
    round_details,
)
from core.params import ParamSpec
from core.reporting import ConsoleReporter, MetricsLog, RoundRecord
from core.sampling import ClientSampler

__all__ = ["CHECKPOINT_NAME", "METRICS_NAME", "Federation", "FederationResult"]

logger = logging.getLogger(__name__)

#: File names inside a run directory.
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationResult:
    """The end of a run: final flat parameters and what each round did.

    `history` holds the rounds run by this call (a resumed run starts after
    the checkpoint); `stopped_early` is the final message when the run ended
    before `config.rounds` because no client could train any more.
    """

    params: Tensor
    rounds_completed: int
    history: tuple[RoundRecord, ...]
    stopped_early: str | None = None


class Federation:
    """Runs FedAvg over in-process clients with pluggable trainer and aggregator.

    `model` gives the architecture and the initial global parameters (it is
    copied, never modified). With `run_dir`, the loop writes
    ``metrics.jsonl`` and, every `config.checkpoint_every` rounds,
    ``checkpoint.pt`` there; `resume()` continues from that checkpoint with
    results bit-identical to an uninterrupted run.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        clients: Sequence[ClientDataset],
        trainer: Trainer,
        aggregator: Aggregator,
        config: FederationConfig,
        test_data: ClientDataset | None = None,
        loss_fn: LossFn = nn.functional.cross_entropy,
        run_dir: str | Path | None = None,
        reporter: ConsoleReporter | None = None,
        run_info: Mapping[str, Any] | None = None,
    ) -> None:
        ids = [c.client_id for c in clients]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"client ids must be unique; found {sorted(ids)}")
        if not ids:
            raise ConfigError("a federation needs at least one client; found none")
        self.config = config
        self._clients = {c.client_id: c for c in clients}
        self._trainer = trainer
        self._aggregator = aggregator
        self._test_data = test_data
        self._loss_fn = loss_fn
        self._model = copy.deepcopy(model)
        self.spec = ParamSpec.from_module(self._model)
        self._params = self.spec.flatten(self._model)
        self._round = 0
        self._retired: dict[int, str] = {}
        self._sampler = ClientSampler(
            fraction=config.fraction_fit,
            min_clients=config.min_fit_clients,
            seed=config.seed,
        )
        self._server_opt = ServerOptimizer(
            learning_rate=config.server_learning_rate,
            momentum=config.server_momentum,
        )
        self.run_dir = None if run_dir is None else Path(run_dir)
        self._log = (
            None if self.run_dir is None else MetricsLog(self.run_dir / METRICS_NAME)
        )
        self._reporter = reporter if reporter is not None else ConsoleReporter()
        self._run_info = dict(run_info or {})

    @property
    def params(self) -> Tensor:
        """A copy of the current global parameters (flat)."""
        return self._params.clone()

    @property
    def rounds_completed(self) -> int:
        """How many rounds have finished (including aborted ones)."""
        return self._round

    def global_model(self) -> nn.Module:
        """A fresh copy of the model holding the current global parameters."""
        model = copy.deepcopy(self._model)
        self.spec.load_into(model, self._params)
        return model

    def evaluate(self, data: ClientDataset) -> EvalResult:
        """Evaluate the current global model on `data`."""
        self.spec.load_into(self._model, self._params)
        return evaluate(self._model, data, loss_fn=self._loss_fn)

    def run(self) -> FederationResult:
        """Run the remaining rounds up to `config.rounds`."""
        total = self.config.rounds
        if self._log is not None:
            self._log.write_header(self._header())
        history: list[RoundRecord] = []
        stopped: str | None = None
        self._reporter.start(first_round=self._round + 1, total_rounds=total)
        try:
            while self._round < total:
                if not self._available():
                    stopped = self._exhausted_message()
                    break
                history.append(self.run_round())
        finally:
            self._reporter.close()
        if stopped is not None:
            logger.warning("%s", stopped)
            self._reporter.message(stopped)
            if self._log is not None:
                self._log.write_event("stopped", {"reason": stopped})
        return FederationResult(
            params=self.params,
            rounds_completed=self._round,
            history=tuple(history),
            stopped_early=stopped,
        )

    def run_round(self) -> RoundRecord:
        """Run the next round, report it, and checkpoint when due."""
        started = time.perf_counter()
        r = self._round + 1
        available = self._available()
        if not available:
            raise FederationError(self._exhausted_message())
        cohort = self._sampler.sample(available)
        skipped: dict[int, str] = {}
        updates: list[ClientUpdate] = []
        for cid in cohort:
            outcome = self._train_one(r, cid)
            if isinstance(outcome, ClientUpdate):
                updates.append(outcome)
            else:
                skipped[cid] = outcome
                logger.warning("round %d: client %d skipped: %s", r, cid, outcome)
        result, aborted = self._aggregate(r, cohort, updates)
        evaluation = self._evaluate_if_due(r)
        record = RoundRecord(
            round_index=r,
            total_rounds=self.config.rounds,
            cohort=cohort,
            num_aggregated=0 if aborted or result is None else result.num_aggregated,
            skipped=skipped,
            dropped=() if result is None else result.dropped,
            aborted=aborted,
            eval_loss=None if evaluation is None else evaluation.loss,
            eval_accuracy=None if evaluation is None else evaluation.accuracy,
            metrics={
                **({} if result is None else result.metrics),
                **self._trainer_metrics(),
            },
            bytes_up=0 if result is None else result.bytes_up,
            bytes_down=0 if result is None else result.bytes_down,
            seconds=time.perf_counter() - started,
            details=round_details(self._trainer),
        )
        self._round = r
        self._reporter.round(record)
        if self._log is not None:
            self._log.write_round(record)
        every = self.config.checkpoint_every
        if (
            self.run_dir is not None
            and every
            and (r % every == 0 or r == self.config.rounds)
        ):
            self.save_checkpoint()
        return record

    def _train_one(self, r: int, cid: int) -> ClientUpdate | str:
        """The client's accepted update, or why it contributes nothing."""
        data = self._clients[cid]
        if data.num_examples == 0:
            self._retired[cid] = "no training data"
            return "no training data"
        # A private copy: a faulty trainer must not be able to edit the model.
        task = TrainTask(
            round_index=r, client_id=cid, global_params=self._params.clone(), data=data
        )
        outcome = self._trainer.train(task)
        if isinstance(outcome, ClientDeclined):
            if outcome.permanent:
                self._retired[cid] = outcome.reason
            return f"declined: {outcome.reason}"
        problem = outcome.defect(cid, self._params)
        return outcome if problem is None else f"rejected: {problem}"

    def _aggregate(
        self, r: int, cohort: tuple[int, ...], updates: list[ClientUpdate]
    ) -> tuple[AggregateResult | None, str | None]:
        if not updates:
            reason = "no client update to aggregate"
            logger.warning("round %d aborted: %s", r, reason)
            return None, reason
        context = RoundContext(
            round_index=r, cohort=cohort, global_params=self._params.clone()
        )
        result: AggregateResult | None = None
        try:
            result = self._aggregator.aggregate(context, updates)
            self._params = self._server_opt.step(self._params, result.mean_delta)
        except RoundAborted as exc:
            logger.warning("round %d aborted, model unchanged: %s", r, exc)
            return result, str(exc) or type(exc).__name__
        return result, None

    def _trainer_metrics(self) -> dict[str, float]:
        if isinstance(self._trainer, ReportsRoundMetrics):
            return dict(self._trainer.round_metrics())
        return {}

    def _evaluate_if_due(self, r: int) -> EvalResult | None:
        if self._test_data is None or self._test_data.num_examples == 0:
            return None
        if r % self.config.eval_every and r != self.config.rounds:
            return None
        return self.evaluate(self._test_data)

    def _available(self) -> list[int]:
        return [cid for cid in self._clients if cid not in self._retired]

    def _exhausted_message(self) -> str:
        reasons = Counter(self._retired.values())
        detail = "; ".join(
            f"{reason} ({count} client{'s' if count > 1 else ''})"
            for reason, count in sorted(reasons.items())
        )
        return (
            f"federation stopped after round {self._round} of "
            f"{self.config.rounds}: no client can train any more ({detail})"
        )

    def _header(self) -> dict[str, Any]:
        return {
            "resumed_from_round": self._round or None,
            "config": asdict(self.config),
            "num_clients": len(self._clients),
            "num_params": self.spec.numel,
            "model_fingerprint": self.spec.fingerprint(),
            "trainer": type(self._trainer).__qualname__,
            "aggregator": type(self._aggregator).__qualname__,
            **self._run_info,
        }

    # -- checkpoint and resume ------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain values."""
        return {
            "version": CHECKPOINT_VERSION,
            "model_layout": self.spec.describe(),
            "model_fingerprint": self.spec.fingerprint(),
            "round": self._round,
            "params": self._params.clone(),
            "retired": [[cid, why] for cid, why in sorted(self._retired.items())],
            "server_optimizer": self._server_opt.state_dict(),
            "sampler": self._sampler.state_dict(),
            # Models with dropout draw from the global generator during training.
            "torch_rng": torch.get_rng_state(),
            "trainer": self._trainer.state_dict(),
            "aggregator": self._aggregator.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict`; refuses one written for another model."""
        if state.get("version") != CHECKPOINT_VERSION:
            raise CheckpointMismatchError(
                f"checkpoint format version must be {CHECKPOINT_VERSION}; "
                f"found {state.get('version')!r}"
            )
        if state.get("model_fingerprint") != self.spec.fingerprint():
            raise CheckpointMismatchError(
                "checkpoint was written for a different model shape: "
                + self.spec.difference(list(state.get("model_layout", [])))
            )
        params = state["params"]
        if not isinstance(params, Tensor) or params.shape != self._params.shape:
            raise CheckpointMismatchError("checkpoint params do not match the model")
        self._params = params.to(
            device=self.spec.flat_device, dtype=self.spec.flat_dtype
        )
        self._round = int(state["round"])
        self._retired = {int(cid): str(why) for cid, why in state["retired"]}
        self._server_opt.load_state_dict(state["server_optimizer"])
        self._sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        self._trainer.load_state_dict(state["trainer"])
        self._aggregator.load_state_dict(state["aggregator"])

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the state atomically (default: ``run_dir/checkpoint.pt``)."""
        target = self._checkpoint_path(path)
        save_checkpoint(target, self.state_dict())
        return target

    def resume(self, path: str | Path | None = None) -> None:
        """Load a checkpoint (default: ``run_dir/checkpoint.pt``)."""
        self.load_state_dict(load_checkpoint(self._checkpoint_path(path)))

    def _checkpoint_path(self, path: str | Path | None) -> Path:
        if path is not None:
            return Path(path)
        if self.run_dir is None:
            raise ConfigError(
                "no checkpoint path given and the federation has no run_dir; "
                "pass a path or construct the Federation with run_dir"
            )
        return self.run_dir / CHECKPOINT_NAME
