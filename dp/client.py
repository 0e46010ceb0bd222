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
4. check that Opacus's accountant counted exactly the charged steps, and only
   then return the trained weights.

The Opacus engine, the wrapped model copy, the DP optimizer and the
accountant are made once per client (on its first round) and reused by every
later round; only a model of another architecture rebuilds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from dp.accounting import (
    StepRun,
    calibrate_noise_multiplier,
    epsilon_for_history,
    merge_runs,
    sample_rate_for,
    steps_per_epoch,
    steps_per_round,
)
from dp.config import DPConfig, GradSampleMode, check_noise_multiplier
from dp.engine import CSPRNGPrivacyEngine, LocalOptimizer, LossFn
from dp.errors import (
    AccountingError,
    BudgetExceededError,
    BudgetTooSmallError,
    DPConfigError,
    InvalidDeltaError,
)
from dp.ledger import PrivacyLedger
from dp.ledger_format import LedgerEntry
from dp.local_training import DPSGDSettings, LocalDPTrainer
from dp.noise import SecureRandom

__all__ = ["PrivateClient", "PrivateRoundResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateRoundResult:
    """One finished private round.  Its ledger entry is already durable.

    ``state_dict`` holds the trained weights (detached copies, keys as in the
    model passed in); the model passed in is left unchanged.  ``train_loss`` is
    computed on private data *without* noise: keep it on the client.
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
    train_loss: float


def _check_identity(client_id: object, num_examples: object) -> None:
    if not isinstance(client_id, str) or not client_id:
        raise DPConfigError(
            f"client_id must be a non-empty string; found {client_id!r}"
        )
    if isinstance(num_examples, bool) or not isinstance(num_examples, int):
        raise DPConfigError(f"num_examples must be an int; found {num_examples!r}")
    if num_examples < 1:
        raise DPConfigError(f"num_examples must be >= 1; found {num_examples!r}")


def _check_delta(config: DPConfig, num_examples: int) -> None:
    if not config.delta < 1.0 / num_examples:
        raise InvalidDeltaError(
            f"delta must be below 1/n_local = 1/{num_examples} = "
            f"{1.0 / num_examples:.3g} (e.g. <= {0.1 / num_examples:.3g}), or "
            f"a mechanism could publish a whole record; found {config.delta!r}"
        )


def _resolve_sigma(
    config: DPConfig, num_examples: int, noise_multiplier: float | None
) -> float:
    if noise_multiplier is None:
        return calibrate_noise_multiplier(config, num_examples)
    sigma = check_noise_multiplier(noise_multiplier)
    if config.noise_multiplier is not None and sigma != config.noise_multiplier:
        raise DPConfigError(
            f"noise_multiplier={sigma!r} contradicts "
            f"config.noise_multiplier={config.noise_multiplier!r}"
        )
    return sigma


def _check_round_args(round_idx: object, lr: object, last_round: int) -> None:
    if isinstance(round_idx, bool) or not isinstance(round_idx, int) or round_idx < 0:
        raise DPConfigError(f"round_idx must be an int >= 0; found {round_idx!r}")
    if round_idx < last_round:
        raise DPConfigError(
            f"round_idx must be >= the last charged round ({last_round}); "
            f"found {round_idx}"
        )
    if isinstance(lr, bool) or not isinstance(lr, int | float):
        raise DPConfigError(f"lr must be a real number; found {lr!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise DPConfigError(f"lr must be finite and > 0; found {lr!r}")


class PrivateClient:
    """DP-SGD, budget and ledger for one client across all rounds of a federation.

    ``noise_multiplier`` overrides the configured one (e.g. a value the
    coordinator already calibrated with :func:`calibrate_noise_multiplier`);
    by default it is ``config.noise_multiplier`` or calibrated here, once, for
    the whole planned schedule.  ``rng`` defaults to a fresh OS-keyed
    :class:`~dp.noise.SecureRandom`.  With ``prefetch_noise=True`` the client
    draws its next round's noise on a background thread as soon as a round
    ends (CPU float32 models, up to 256 MiB), so that round only adds it.
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
        prefetch_noise: bool = False,
    ) -> None:
        _check_identity(client_id, num_examples)
        if not isinstance(prefetch_noise, bool):
            raise DPConfigError(
                f"prefetch_noise must be True or False; found {prefetch_noise!r}"
            )
        _check_delta(config, num_examples)
        sigma = _resolve_sigma(config, num_examples, noise_multiplier)
        self._client_id = client_id
        self._n = num_examples
        self._config = config
        self._sigma = sigma
        self._q = sample_rate_for(num_examples, config.batch_size)
        self._round_run = StepRun(sigma, self._q, steps_per_round(config, num_examples))
        one_round = epsilon_for_history(
            [self._round_run], config.delta, config.accountant
        )
        if one_round > config.epsilon_budget:
            raise BudgetTooSmallError(
                f"epsilon_budget must be at least one round's cost, ε={one_round:.4f} "
                f"(σ={sigma:.4g}, q={self._q:.4g}, {self._round_run.steps} steps, "
                f"δ={config.delta!r}); found {config.epsilon_budget!r}"
            )
        ledger = PrivacyLedger.open(ledger_path, missing_ok=True)
        ledger.check_owner(
            client_id=client_id, delta=config.delta, accountant=config.accountant
        )
        self._ledger = ledger
        self._engine = CSPRNGPrivacyEngine(
            accountant=config.accountant,
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

    def epsilon_spent(self) -> float:
        """ε spent so far, as recorded by the last ledger entry (0 if none)."""
        return self._ledger.epsilon_spent

    def projected_epsilon(self) -> float:
        """ε this client would have spent after one more round."""
        key = len(self._ledger.entries)
        if self._projection is None or self._projection[0] != key:
            eps = epsilon_for_history(
                [*self._ledger.history, self._round_run],
                self._config.delta,
                self._config.accountant,
            )
            self._projection = (key, eps)
        return self._projection[1]

    def budget_left(self) -> float:
        """``epsilon_budget − epsilon_spent()`` (never negative)."""
        return max(0.0, self._config.epsilon_budget - self.epsilon_spent())

    def wait_for_prefetched_noise(self) -> None:
        """Block until the next round's noise drawn ahead (if any) is ready."""
        self._trainer.wait_for_prefetched_noise()

    def can_train(self) -> bool:
        """Whether one more round fits in the budget."""
        return self.projected_epsilon() <= self._config.epsilon_budget

    def _charge(self, round_idx: int) -> tuple[float, LedgerEntry]:
        """Refuse past the budget, else append the round's entry (fsync'd)."""
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
        charged_before = list(self._ledger.history)
        entry = self._ledger.append(
            client_id=self._client_id,
            round_idx=round_idx,
            run=self._round_run,
            delta=self._config.delta,
            accountant=self._config.accountant,
            epsilon=projected,
            epsilon_budget=self._config.epsilon_budget,
            max_grad_norm=self._config.max_grad_norm,
        )
        # The ledger is the accountant of record; Opacus's accountant restarts
        # from it every round, so a round that crashed mid-way cannot desync them.
        self._engine.accountant.load_state_dict(
            {
                "history": [
                    (r.noise_multiplier, r.sample_rate, r.steps)
                    for r in merge_runs(charged_before)
                ],
                "mechanism": self._config.accountant.value,
            }
        )
        return before, entry

    def _check_counted(self) -> None:
        counted = [StepRun(s, q, k) for s, q, k in self._engine.accountant.history]
        if merge_runs(counted) != merge_runs(self._ledger.history):
            raise AccountingError(
                f"Opacus accountant counted {counted} but the ledger charged "
                f"{merge_runs(self._ledger.history)}; withholding the update"
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
        entries = self._ledger.entries
        _check_round_args(round_idx, lr, entries[-1].round if entries else 0)
        if len(dataset) != self._n:  # type: ignore[arg-type]
            raise DPConfigError(
                f"dataset must have num_examples={self._n} items, the size the "
                f"sample rate was fixed for; found {len(dataset)}"  # type: ignore[arg-type]
            )
        self._trainer.prepare(model, dataset, optimizer)
        before, entry = self._charge(round_idx)
        outcome = self._trainer.run(
            model,
            dataset,
            epochs=self._config.local_epochs,
            lr=float(lr),
            loss_fn=loss_fn or nn.CrossEntropyLoss(reduction="none"),
            kind=optimizer,
        )
        self._check_counted()
        return PrivateRoundResult(
            client_id=self._client_id,
            round_idx=round_idx,
            state_dict=outcome.state_dict,
            num_examples=self._n,
            steps=outcome.steps,
            noise_multiplier=self._sigma,
            sample_rate=self._q,
            epsilon_before=before,
            epsilon_after=entry.epsilon,
            epsilon_budget=self._config.epsilon_budget,
            ledger_entry=entry,
            train_loss=outcome.train_loss,
        )
