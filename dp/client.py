"""A client's private side for a whole federation: budget, ledger, DP-SGD rounds.

:class:`PrivateClient` is the object the FedAvg coordinator keeps per client.
Its accountant is its ledger: on construction it reads (and verifies) the
ledger, so a restarted client resumes from what it has already spent and never
from zero.  Each :meth:`PrivateClient.train_round` is:

1. **check** the inputs and the model, then project ε after the round; if that
   exceeds the budget raise :class:`~dp.errors.BudgetExceededError` (nothing
   trained, nothing written);
2. **charge**: append the round's entry to the ledger, fsync'd (write-ahead, so
   a crash at any later point leaves the charge on record; over-counting a
   round whose update never left is safe, under-counting never happens);
3. **train** the client's private copy of the model with CSPRNG DP-SGD
   through Opacus;
4. check that Opacus's accountant counted exactly the charged steps;
5. with ``DPConfig.release_loss`` only: **charge** the loss release, then add
   its noise (:mod:`dp.loss_release`);
6. return the trained weights and the accounted values, nothing else.

**Rollback.** A coordinator that records each client's
:attr:`PrivateClient.ledger_head` every round passes the last one it recorded
to :meth:`PrivateClient.check_not_rolled_back` before asking the client to
train; a ledger that lost entries since is refused with
:class:`~dp.errors.LedgerRollbackError`.

The Opacus engine, the wrapped model copy, the DP optimizer and the
accountant are made once per client (on its first round) and reused by every
later round; only a model of another architecture rebuilds them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from dp.accounting import StepRun, merge_runs, steps_per_epoch
from dp.charges import (
    charge,
    check_ledger_not_behind,
    default_loss,
    dp_sgd_runs,
    epsilon_of,
    open_own_ledger,
    release_round_loss,
    runs_within_budget,
    step_counter,
)
from dp.client_args import (
    check_dataset_size,
    check_delta,
    check_identity,
    check_round_args,
    resolve_sigma,
)
from dp.config import DPConfig, GradSampleMode
from dp.engine import CSPRNGPrivacyEngine, LocalOptimizer, LossFn
from dp.errors import AccountingError, BudgetExceededError, DPConfigError
from dp.ledger import PrivacyLedger
from dp.ledger_format import LedgerEntry
from dp.ledger_heads import LedgerHead
from dp.local_training import DPSGDSettings, LocalDPTrainer
from dp.noise import SecureRandom
from dp.round_result import PrivateRoundResult

__all__ = ["PrivateClient", "PrivateRoundResult"]

_log = logging.getLogger(__name__)


class PrivateClient:
    """DP-SGD, budget and ledger for one client across all rounds of a federation.

    ``noise_multiplier`` overrides the configured one (e.g. a value the
    coordinator already calibrated with :func:`calibrate_noise_multiplier`);
    by default it is ``config.noise_multiplier`` or calibrated here, once, for
    the whole planned schedule.  ``rng`` defaults to a fresh OS-keyed
    :class:`~dp.noise.SecureRandom`.

    For a CPU float32 model of at least
    :data:`~dp.local_training.DRAW_AHEAD_MIN_PARAMS` parameters the noise
    is kept off the critical path: each round's noise is drawn on a
    background thread a few steps ahead of the optimizer, and with
    ``prefetch_noise`` (the default) the whole of the next round's noise, and
    its ε projection, are prepared on a background thread as soon as a round
    ends, while the client waits for the server, if that round fits the
    budget and the process-wide prefetch memory
    (:data:`~dp.noise_prefetch.PREFETCH_MAX_BYTES`).  A smaller model's
    noise is drawn inline: there the threads cost more than they save.
    """

    def __init__(
        self,
        client_id: str,
        num_examples: int,
        config: DPConfig,
        ledger_path: Path | str,
        *,
        noise_multiplier: float | None = None,
        rng: SecureRandom | None = None,
        prefetch_noise: bool = True,
    ) -> None:
        check_identity(client_id, num_examples)
        if not isinstance(prefetch_noise, bool):
            raise DPConfigError(
                f"prefetch_noise must be True or False; found {prefetch_noise!r}"
            )
        check_delta(config, num_examples)
        sigma = resolve_sigma(config, num_examples, noise_multiplier)
        self._client_id = client_id
        self._n = num_examples
        self._config = config
        self._sigma = sigma
        self._runs = runs_within_budget(config, sigma, num_examples)
        self._round_run = self._runs[0]
        self._q = self._round_run.sample_rate
        self._ledger = open_own_ledger(ledger_path, client_id, config)
        self._engine = CSPRNGPrivacyEngine(
            accountant=step_counter(config.accountant),
            rng=rng if rng is not None else SecureRandom(),
            normaliser=float(config.batch_size),
        )
        self._trainer = LocalDPTrainer(
            self._engine,
            DPSGDSettings(
                noise_multiplier=sigma,
                max_grad_norm=config.max_grad_norm,
                steps_per_epoch=steps_per_epoch(num_examples, config.batch_size),
                grad_sample_mode=config.grad_sample_mode,
                prefetch_noise=prefetch_noise,
            ),
        )
        self._projection: tuple[int, float] | None = None
        self._ahead: threading.Thread | None = None

    @property
    def client_id(self) -> str:
        """This client's id, as written in every ledger entry."""
        return self._client_id

    @property
    def config(self) -> DPConfig:
        """The privacy configuration."""
        return self._config

    @property
    def noise_multiplier(self) -> float:
        """σ used in every round."""
        return self._sigma

    @property
    def sample_rate(self) -> float:
        """Poisson sample rate q = 1/ceil(n/B)."""
        return self._q

    @property
    def steps_per_round(self) -> int:
        """DP-SGD steps charged per round."""
        return self._round_run.steps

    @property
    def grad_sample_mode(self) -> GradSampleMode | None:
        """How this client clips (``config.grad_sample_mode`` unless it fell
        back to hooks); ``None`` before its first round."""
        return self._trainer.grad_sample_mode

    @property
    def ledger(self) -> PrivacyLedger:
        """The client's ledger (read-only use; only this client appends)."""
        return self._ledger

    @property
    def ledger_head(self) -> LedgerHead:
        """The head of this client's ledger, for the coordinator to record."""
        return self._ledger.head

    def check_not_rolled_back(self, expected: LedgerHead) -> None:
        """Refuse a ledger that is behind ``expected``, the last recorded head.

        Re-reads the ledger file, so a file truncated or replaced while this
        client was alive is caught too.  Raises
        :class:`~dp.errors.LedgerRollbackError` naming this client, the head
        found and the head expected; call it before :meth:`train_round`.
        """
        self._settle()
        check_ledger_not_behind(self._ledger, expected, self._client_id)

    def epsilon_spent(self) -> float:
        """ε spent so far, as recorded by the last ledger entry (0 if none)."""
        return self._ledger.epsilon_spent

    def projected_epsilon(self) -> float:
        """ε this client would have spent after one more round."""
        self._settle()
        return self._projected()

    def _projected(self) -> float:
        key = len(self._ledger.entries)
        if self._projection is None or self._projection[0] != key:
            eps = epsilon_of(self._config, [*self._ledger.history, *self._runs])
            self._projection = (key, eps)
        return self._projection[1]

    def budget_left(self) -> float:
        """``epsilon_budget − epsilon_spent()`` (never negative)."""
        return max(0.0, self._config.epsilon_budget - self.epsilon_spent())

    def wait_for_prefetched_noise(self) -> None:
        """Block until the next round's projection and noise drawn ahead are ready."""
        self._settle()
        self._trainer.wait_for_prefetched_noise()

    def _settle(self) -> None:
        """Wait for the background preparation of the next round, if any."""
        if self._ahead is not None:
            self._ahead.join()
            self._ahead = None

    def _start_next_round(self) -> None:
        """With ``prefetch_noise``, prepare the next round on a background thread."""
        if self._trainer.prefetch_noise:
            # Spawned here, so the thread never touches this client's generator.
            self._ahead = threading.Thread(
                target=self._prepare_next_round,
                args=(self._engine.rng.spawn(),),
                name="dp-next-round",
                daemon=True,
            )
            self._ahead.start()

    def _prepare_next_round(self, rng: SecureRandom) -> None:
        """Project the next round's ε and, if it fits the budget, draw its noise.

        Runs on a background thread after a round; a failure here only means
        the next round does the work itself (and reports any error there).
        """
        try:
            if self._projected() <= self._config.epsilon_budget:
                self._trainer.start_prefetch(self._config.local_epochs, rng)
        except Exception:  # redone, and raised if it recurs, in the next round
            _log.debug("preparing the next round failed", exc_info=True)

    def can_train(self) -> bool:
        """Whether one more round fits in the budget."""
        return self.projected_epsilon() <= self._config.epsilon_budget

    def _charge(self, round_idx: int) -> tuple[float, float, LedgerEntry]:
        """Refuse past the budget, else append the round's DP-SGD entry (fsync'd).

        Returns ε before the round, ε projected after the whole round (loss
        release included) and the DP-SGD entry.
        """
        self._ledger.verify()
        before = self.epsilon_spent()
        projected = self.projected_epsilon()
        if projected > self._config.epsilon_budget:
            raise BudgetExceededError(
                client_id=self._client_id,
                round_idx=round_idx,
                epsilon_spent=before,
                epsilon_projected=projected,
                epsilon_budget=self._config.epsilon_budget,
            )
        charged_before = dp_sgd_runs(self._ledger.history)
        entry = charge(
            self._ledger,
            self._config,
            client_id=self._client_id,
            round_idx=round_idx,
            run=self._round_run,
            epsilon=projected
            if len(self._runs) == 1
            else epsilon_of(self._config, [*self._ledger.history, self._round_run]),
        )
        # The ledger is the accountant of record; Opacus's accountant (here a
        # step counter) restarts from it every round, so a round that crashed
        # mid-way cannot desync them.
        self._engine.accountant.load_state_dict(
            {
                "history": [
                    (r.noise_multiplier, r.sample_rate, r.steps)
                    for r in merge_runs(charged_before)
                ],
                "mechanism": self._engine.accountant.mechanism(),
            }
        )
        return before, projected, entry

    def _check_counted(self) -> None:
        counted = [StepRun(s, q, k) for s, q, k in self._engine.accountant.history]
        charged = merge_runs(dp_sgd_runs(self._ledger.history))
        if merge_runs(counted) != charged:
            raise AccountingError(
                f"Opacus accountant counted {counted} but the ledger charged "
                f"{charged}; withholding the update"
            )

    def _release_loss(
        self,
        round_idx: int,
        projected: float,
        trained: tuple[nn.Module, dict[str, torch.Tensor]],
        dataset: Dataset[Any],
        loss_fn: LossFn,
    ) -> tuple[LedgerEntry | None, float | None]:
        """Charge, then release, the round's noised loss if the config asks for it."""
        if len(self._runs) == 1:
            return None, None
        model, state_dict = trained
        return release_round_loss(
            ledger=self._ledger,
            config=self._config,
            client_id=self._client_id,
            round_idx=round_idx,
            run=self._runs[1],
            epsilon=projected,
            model=model,
            state_dict=state_dict,
            dataset=dataset,
            loss_fn=loss_fn,
            rng=self._engine.rng,
        )

    def train_round(
        self,
        model: nn.Module,
        dataset: Dataset[Any],
        *,
        round_idx: int,
        lr: float,
        loss_fn: LossFn | None = None,
        optimizer: LocalOptimizer = LocalOptimizer.SGD,
    ) -> PrivateRoundResult:
        """Train one round privately; see the module docstring for the order.

        ``dataset`` yields ``(input, target)`` pairs and must have exactly
        ``num_examples`` items.  ``loss_fn`` returns per-example losses
        (default: cross-entropy with ``reduction="none"``).  Raises
        :class:`BudgetExceededError` before touching anything when the round
        would exceed the budget; :class:`DPConfigError` for bad arguments;
        :class:`UnsupportedModelError` for a model Opacus cannot privatise.
        """
        self._settle()
        entries = self._ledger.entries
        check_round_args(round_idx, lr, entries[-1].round if entries else 0)
        check_dataset_size(dataset, self._n)
        self._trainer.prepare(model, dataset, optimizer)
        before, projected, entry = self._charge(round_idx)
        loss = loss_fn if loss_fn is not None else default_loss()
        outcome = self._trainer.run(
            model,
            dataset,
            epochs=self._config.local_epochs,
            lr=float(lr),
            loss_fn=loss,
            kind=optimizer,
        )
        self._check_counted()
        loss_entry, noised_loss = self._release_loss(
            round_idx, projected, (model, outcome.state_dict), dataset, loss
        )
        self._start_next_round()
        return PrivateRoundResult(
            client_id=self._client_id,
            round_idx=round_idx,
            state_dict=outcome.state_dict,
            num_examples=self._n,
            steps=outcome.steps,
            noise_multiplier=self._sigma,
            sample_rate=self._q,
            epsilon_before=before,
            epsilon_after=self._ledger.epsilon_spent,
            epsilon_budget=self._config.epsilon_budget,
            ledger_entry=entry,
            loss_entry=loss_entry,
            noised_loss=noised_loss,
            ledger_head=self._ledger.head,
        )
