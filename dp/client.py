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

from dp.accounting import (
    Mechanism,
    StepRun,
    epsilon_for_history,
    merge_runs,
    round_runs,
    steps_per_epoch,
)
from dp.calibration import calibrate_noise_multiplier
from dp.config import Accountant, DPConfig, check_noise_multiplier
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
    BudgetTooSmallError,
    DPConfigError,
    InvalidDeltaError,
)
from dp.ledger import PrivacyLedger
from dp.ledger_format import LedgerEntry, read_ledger
from dp.ledger_heads import LedgerHead, check_not_behind
from dp.loss_release import clipped_loss_sum, release_mean_loss
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
        self._runs = round_runs(config, sigma, num_examples)
        self._round_run = self._runs[0]
        self._q = self._round_run.sample_rate
        one_round = self._epsilon(self._runs)
        if one_round > config.epsilon_budget:
            raise BudgetTooSmallError(
                f"epsilon_budget must be at least one round's cost, ε={one_round:.4f} "
                f"(σ={sigma:.4g}, q={self._q:.4g}, {self._round_run.steps} steps, "
                f"δ={config.delta!r}); found {config.epsilon_budget!r}"
            )
        ledger = PrivacyLedger.open(ledger_path, missing_ok=True)
        ledger.check_owner(
            client_id=client_id,
            delta=config.delta,
            accountant=config.accountant,
            neighbouring=config.neighbouring,
        )
        self._ledger = ledger
        self._engine = CSPRNGPrivacyEngine(
            accountant=_step_counter(config.accountant),
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
        path = self._ledger.path
        on_disk = read_ledger(path) if path.exists() else ()
        check_not_behind(on_disk, expected, client_id=self._client_id, path=path)

    def epsilon_spent(self) -> float:
        """ε spent so far, as recorded by the last ledger entry (0 if none)."""
        return self._ledger.epsilon_spent

    def _epsilon(self, history: list[StepRun]) -> float:
        return epsilon_for_history(
            history,
            self._config.delta,
            self._config.accountant,
            neighbouring=self._config.neighbouring,
        )

    def projected_epsilon(self) -> float:
        """ε this client would have spent after one more round."""
        key = len(self._ledger.entries)
        if self._projection is None or self._projection[0] != key:
            eps = self._epsilon([*self._ledger.history, *self._runs])
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
        charged_before = _dp_sgd_runs(self._ledger.history)
        entry = self._charge(
            round_idx,
            self._round_run,
            projected
            if len(self._runs) == 1
            else self._epsilon([*self._ledger.history, self._round_run]),
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
            loss_fn=loss_fn if loss_fn is not None else _default_loss(),
            optimizer=optimizer,
            grad_sample_mode=self._config.grad_sample_mode,
        )
        counted = [StepRun(s, q, k) for s, q, k in self._engine.accountant.history]
        charged = merge_runs(_dp_sgd_runs(self._ledger.history))
        if merge_runs(counted) != charged:
            raise AccountingError(
                f"Opacus accountant counted {counted} but the ledger charged "
                f"{charged}; withholding the update"
            )
        loss_entry, noised_loss = self._release_loss(
            model, outcome.state_dict, dataset, loss_fn, round_idx, projected
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

    def _charge(self, round_idx: int, run: StepRun, epsilon: float) -> LedgerEntry:
        """Durably append one charge made under this client's configuration."""
        clip = (
            self._config.loss_bound
            if run.mechanism is Mechanism.GAUSSIAN_BOUNDED_SUM
            else self._config.max_grad_norm
        )
        assert clip is not None  # DPConfig requires loss_bound with release_loss
        return self._ledger.append(
            client_id=self._client_id,
            round_idx=round_idx,
            run=run,
            delta=self._config.delta,
            accountant=self._config.accountant,
            neighbouring=self._config.neighbouring,
            epsilon=epsilon,
            epsilon_budget=self._config.epsilon_budget,
            clip_bound=clip,
        )

    def _release_loss(
        self,
        model: nn.Module,
        state_dict: dict[str, torch.Tensor],
        dataset: Dataset[Any],
        loss_fn: LossFn | None,
        round_idx: int,
        epsilon: float,
    ) -> tuple[LedgerEntry | None, float | None]:
        """The round's DP loss release (charged first), or (None, None)."""
        if len(self._runs) == 1:
            return None, None
        cfg = self._config
        assert cfg.loss_bound is not None and cfg.loss_noise_multiplier is not None
        total = clipped_loss_sum(
            model, state_dict, dataset, loss_fn or _default_loss(), cfg.loss_bound
        )
        charged: list[LedgerEntry] = []
        value = release_mean_loss(
            total=total,
            num_examples=self._n,
            bound=cfg.loss_bound,
            noise_multiplier=cfg.loss_noise_multiplier,
            rng=self._engine.rng,
            charge=lambda: charged.append(
                self._charge(round_idx, self._runs[1], epsilon)
            ),
        )
        return charged[0], value


def _default_loss() -> LossFn:
    return nn.CrossEntropyLoss(reduction="none")


def _dp_sgd_runs(history: list[StepRun]) -> list[StepRun]:
    return [r for r in history if r.mechanism is Mechanism.POISSON_SUBSAMPLED_GAUSSIAN]


def _step_counter(accountant: Accountant) -> Accountant:
    """The Opacus accountant that counts steps inside the privacy engine.

    ε always comes from :mod:`dp.accounting`; Opacus's accountant only lets
    the client check that training ran exactly the charged steps.  Opacus has
    no PLD accountant, so PLD clients count with Opacus's RDP.
    """
    return accountant if accountant is not Accountant.PLD else Accountant.RDP
