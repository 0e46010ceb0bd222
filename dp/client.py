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
3. **train** a copy of the model with CSPRNG DP-SGD through Opacus;
4. check that Opacus's accountant counted exactly the charged steps;
5. with ``DPConfig.release_loss`` only: **charge** the loss release, then add
   its noise (:mod:`dp.loss_release`);
6. return the trained weights and the accounted values, nothing else.

**Rollback.** A coordinator that records each client's
:attr:`PrivateClient.ledger_head` every round passes the last one it recorded
to :meth:`PrivateClient.check_not_rolled_back` before asking the client to
train; a ledger that lost entries since is refused with
:class:`~dp.errors.LedgerRollbackError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from dp.accounting import StepRun, merge_runs, steps_per_epoch
from dp.calibration import calibrate_noise_multiplier
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
from dp.config import DPConfig, check_noise_multiplier
from dp.engine import (
    CSPRNGPrivacyEngine,
    LocalOptimizer,
    LossFn,
    check_private_compatible,
    run_dp_sgd,
)
from dp.errors import (
    AccountingError,
    BudgetExceededError,
    DPConfigError,
    InvalidDeltaError,
)
from dp.ledger import PrivacyLedger
from dp.ledger_format import LedgerEntry
from dp.ledger_heads import LedgerHead
from dp.noise import ChaCha20Random

__all__ = ["PrivateClient", "PrivateRoundResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateRoundResult:
    """One finished private round.  Its ledger entries are already durable.

    Everything here is covered by the client's ε or public under its
    accounting: ``state_dict`` holds the trained weights (clipped, noised
    DP-SGD; detached copies, keys as in the model passed in; the model passed
    in is left unchanged), the rest are accounted values and the ledger's
    records of them.  ``noised_loss`` is the DP-released mean clipped training
    loss when ``DPConfig.release_loss`` is on (charged as ``loss_entry``), else
    None: no un-noised metric is returned.  ``num_examples`` is the count the
    caller passed in, public under replace-one accounting.
    """

    client_id: str
    round_idx: int
    state_dict: dict[str, torch.Tensor]
    num_examples: int
    steps: int
    noise_multiplier: float
    sample_rate: float
    epsilon_before: float
    epsilon_after: float
    epsilon_budget: float
    ledger_entry: LedgerEntry
    loss_entry: LedgerEntry | None
    noised_loss: float | None
    ledger_head: LedgerHead


class PrivateClient:
    """DP-SGD, budget and ledger for one client across all rounds of a federation.

    ``noise_multiplier`` overrides the configured one (e.g. a value the
    coordinator already calibrated with :func:`calibrate_noise_multiplier`);
    by default it is ``config.noise_multiplier`` or calibrated here, once, for
    the whole planned schedule.
    """

    def __init__(
        self,
        client_id: str,
        num_examples: int,
        config: DPConfig,
        ledger_path: Path | str,
        *,
        noise_multiplier: float | None = None,
        rng: ChaCha20Random | None = None,
    ) -> None:
        if not isinstance(client_id, str) or not client_id:
            raise DPConfigError(
                f"client_id must be a non-empty string; found {client_id!r}"
            )
        if isinstance(num_examples, bool) or not isinstance(num_examples, int):
            raise DPConfigError(f"num_examples must be an int; found {num_examples!r}")
        if num_examples < 1:
            raise DPConfigError(f"num_examples must be >= 1; found {num_examples!r}")
        if not config.delta < 1.0 / num_examples:
            raise InvalidDeltaError(
                f"delta must be below 1/n_local = 1/{num_examples} = "
                f"{1.0 / num_examples:.3g} (e.g. <= {0.1 / num_examples:.3g}), or "
                f"a mechanism could publish a whole record; found {config.delta!r}"
            )
        if noise_multiplier is None:
            sigma = calibrate_noise_multiplier(config, num_examples)
        else:
            sigma = check_noise_multiplier(noise_multiplier)
            if config.noise_multiplier is not None and sigma != config.noise_multiplier:
                raise DPConfigError(
                    f"noise_multiplier={sigma!r} contradicts "
                    f"config.noise_multiplier={config.noise_multiplier!r}"
                )
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
            rng=rng if rng is not None else ChaCha20Random(),
            normaliser=float(config.batch_size),
        )
        self._projection: tuple[int, float] | None = None

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
        check_ledger_not_behind(self._ledger, expected, self._client_id)

    def epsilon_spent(self) -> float:
        """ε spent so far, as recorded by the last ledger entry (0 if none)."""
        return self._ledger.epsilon_spent

    def projected_epsilon(self) -> float:
        """ε this client would have spent after one more round."""
        key = len(self._ledger.entries)
        if self._projection is None or self._projection[0] != key:
            eps = epsilon_of(self._config, [*self._ledger.history, *self._runs])
            self._projection = (key, eps)
        return self._projection[1]

    def budget_left(self) -> float:
        """``epsilon_budget − epsilon_spent()`` (never negative)."""
        return max(0.0, self._config.epsilon_budget - self.epsilon_spent())

    def can_train(self) -> bool:
        """Whether one more round fits in the budget."""
        return self.projected_epsilon() <= self._config.epsilon_budget

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
        if (
            isinstance(round_idx, bool)
            or not isinstance(round_idx, int)
            or round_idx < 0
        ):
            raise DPConfigError(f"round_idx must be an int >= 0; found {round_idx!r}")
        entries = self._ledger.entries
        last_round = entries[-1].round if entries else 0
        if round_idx < last_round:
            raise DPConfigError(
                f"round_idx must be >= the last charged round ({last_round}); "
                f"found {round_idx}"
            )
        if len(dataset) != self._n:  # type: ignore[arg-type]
            raise DPConfigError(
                f"dataset must have num_examples={self._n} items, the size the "
                f"sample rate was fixed for; found {len(dataset)}"  # type: ignore[arg-type]
            )
        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            raise DPConfigError(f"lr must be a real number; found {lr!r}")
        if not (math.isfinite(lr) and lr > 0):
            raise DPConfigError(f"lr must be finite and > 0; found {lr!r}")
        check_private_compatible(model)
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
        outcome = run_dp_sgd(
            engine=self._engine,
            model=model,
            dataset=dataset,
            noise_multiplier=self._sigma,
            max_grad_norm=self._config.max_grad_norm,
            sample_rate=self._q,
            steps_per_epoch=steps_per_epoch(self._n, self._config.batch_size),
            epochs=self._config.local_epochs,
            lr=float(lr),
            loss_fn=loss_fn if loss_fn is not None else default_loss(),
            optimizer=optimizer,
            grad_sample_mode=self._config.grad_sample_mode,
        )
        counted = [StepRun(s, q, k) for s, q, k in self._engine.accountant.history]
        charged = merge_runs(dp_sgd_runs(self._ledger.history))
        if merge_runs(counted) != charged:
            raise AccountingError(
                f"Opacus accountant counted {counted} but the ledger charged "
                f"{charged}; withholding the update"
            )
        loss_entry, noised_loss = None, None
        if len(self._runs) > 1:
            loss_entry, noised_loss = release_round_loss(
                ledger=self._ledger,
                config=self._config,
                client_id=self._client_id,
                round_idx=round_idx,
                run=self._runs[1],
                epsilon=projected,
                model=model,
                state_dict=outcome.state_dict,
                dataset=dataset,
                loss_fn=loss_fn if loss_fn is not None else default_loss(),
                rng=self._engine.rng,
            )
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
