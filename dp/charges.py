"""What a client's round costs, and how each cost reaches its ledger.

The pieces of :class:`dp.client.PrivateClient` that decide and record privacy
spending, apart from training: the runs one round charges, the ledger it
charges them to, the DP loss release (charged before it is drawn), and the
rollback check against a head the coordinator recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from dp.accounting import Mechanism, StepRun, epsilon_for_history, round_runs
from dp.config import Accountant, DPConfig
from dp.errors import BudgetTooSmallError
from dp.ledger import PrivacyLedger
from dp.ledger_format import LedgerEntry, read_ledger
from dp.ledger_heads import LedgerHead, check_not_behind
from dp.loss_release import LossFn, clipped_loss_sum, release_mean_loss
from dp.noise import ChaCha20Random

__all__ = [
    "charge",
    "check_ledger_not_behind",
    "default_loss",
    "dp_sgd_runs",
    "epsilon_of",
    "open_own_ledger",
    "release_round_loss",
    "runs_within_budget",
    "step_counter",
]


def epsilon_of(config: DPConfig, history: Sequence[StepRun]) -> float:
    """ε of ``history`` under ``config``'s δ, accountant and relation."""
    return epsilon_for_history(
        history, config.delta, config.accountant, neighbouring=config.neighbouring
    )


def runs_within_budget(
    config: DPConfig, noise_multiplier: float, num_examples: int
) -> list[StepRun]:
    """The runs one round charges; :class:`BudgetTooSmallError` if they exceed it."""
    runs = round_runs(config, noise_multiplier, num_examples)
    one_round = epsilon_of(config, runs)
    if one_round > config.epsilon_budget:
        sgd = runs[0]
        raise BudgetTooSmallError(
            f"epsilon_budget must be at least one round's cost, ε={one_round:.4f} "
            f"(σ={noise_multiplier:.4g}, q={sgd.sample_rate:.4g}, {sgd.steps} steps, "
            f"δ={config.delta!r}); found {config.epsilon_budget!r}"
        )
    return runs


def open_own_ledger(
    path: Path | str, client_id: str, config: DPConfig
) -> PrivacyLedger:
    """Open (or start) the ledger, refusing one of another client or setting."""
    ledger = PrivacyLedger.open(path, missing_ok=True)
    ledger.check_owner(
        client_id=client_id,
        delta=config.delta,
        accountant=config.accountant,
        neighbouring=config.neighbouring,
    )
    return ledger


def check_ledger_not_behind(
    ledger: PrivacyLedger, expected: LedgerHead, client_id: str
) -> None:
    """Re-read the ledger file and refuse it if it is behind ``expected``."""
    on_disk = read_ledger(ledger.path) if ledger.path.exists() else ()
    check_not_behind(on_disk, expected, client_id=client_id, path=ledger.path)


def charge(
    ledger: PrivacyLedger,
    config: DPConfig,
    *,
    client_id: str,
    round_idx: int,
    run: StepRun,
    epsilon: float,
) -> LedgerEntry:
    """Durably append one charge made under ``config``."""
    clip = (
        config.loss_bound
        if run.mechanism is Mechanism.GAUSSIAN_BOUNDED_SUM
        else config.max_grad_norm
    )
    assert clip is not None  # DPConfig requires loss_bound with release_loss
    return ledger.append(
        client_id=client_id,
        round_idx=round_idx,
        run=run,
        delta=config.delta,
        accountant=config.accountant,
        neighbouring=config.neighbouring,
        epsilon=epsilon,
        epsilon_budget=config.epsilon_budget,
        clip_bound=clip,
    )


def release_round_loss(
    *,
    ledger: PrivacyLedger,
    config: DPConfig,
    client_id: str,
    round_idx: int,
    run: StepRun,
    epsilon: float,
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    dataset: Dataset[Any],
    loss_fn: LossFn,
    rng: ChaCha20Random,
) -> tuple[LedgerEntry, float]:
    """Charge ``run`` (the round's loss release) to ``ledger``, then release it."""
    assert config.loss_bound is not None and config.loss_noise_multiplier is not None
    total = clipped_loss_sum(model, state_dict, dataset, loss_fn, config.loss_bound)
    charged: list[LedgerEntry] = []
    value = release_mean_loss(
        total=total,
        num_examples=len(dataset),  # type: ignore[arg-type]
        bound=config.loss_bound,
        noise_multiplier=config.loss_noise_multiplier,
        rng=rng,
        charge=lambda: charged.append(
            charge(
                ledger,
                config,
                client_id=client_id,
                round_idx=round_idx,
                run=run,
                epsilon=epsilon,
            )
        ),
    )
    return charged[0], value


def default_loss() -> LossFn:
    """Per-example cross-entropy, the loss when a caller gives none."""
    return nn.CrossEntropyLoss(reduction="none")


def dp_sgd_runs(history: Sequence[StepRun]) -> list[StepRun]:
    """The DP-SGD runs of ``history`` (what Opacus's step counter sees)."""
    return [r for r in history if r.mechanism is Mechanism.POISSON_SUBSAMPLED_GAUSSIAN]


def step_counter(accountant: Accountant) -> Accountant:
    """The Opacus accountant that counts steps inside the privacy engine.

    ε always comes from :mod:`dp.accounting`; Opacus's accountant only lets
    the client check that training ran exactly the charged steps.  Opacus has
    no PLD accountant, so PLD clients count with Opacus's RDP.
    """
    return accountant if accountant is not Accountant.PLD else Accountant.RDP
