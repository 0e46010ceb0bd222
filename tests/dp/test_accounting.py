"""Pinned ε values, composition across rounds, and σ calibration."""

from __future__ import annotations

import pytest

from dp import (
    Accountant,
    StepRun,
    calibrate_noise_multiplier,
    epsilon_for_history,
    sample_rate_for,
    steps_per_round,
)
from tests.dp.helpers import config


@pytest.mark.parametrize(
    ("accountant", "steps", "expected", "tol"),
    [
        # notes §5.2: Opacus RDP == dp-accounting RDP; Opacus PRV == MS PRV upper.
        (Accountant.RDP, 1000, 1.71177, 5e-6),
        (Accountant.RDP, 10000, 5.6320, 5e-5),  # notes §1 table, 4 d.p.
        (Accountant.PRV, 1000, 1.5255, 5e-5),
    ],
)
def test_epsilon_pinned(
    accountant: Accountant, steps: int, expected: float, tol: float
) -> None:
    eps = epsilon_for_history([StepRun(1.1, 0.01, steps)], 1e-5, accountant)
    assert eps == pytest.approx(expected, abs=tol)


def test_empty_history_costs_nothing() -> None:
    assert epsilon_for_history([], 1e-5, Accountant.RDP) == 0.0


@pytest.mark.parametrize("accountant", list(Accountant))
def test_three_rounds_compose_like_one_accountant(accountant: Accountant) -> None:
    per_round = [StepRun(1.1, 0.01, 100)] * 3
    assert epsilon_for_history(per_round, 1e-5, accountant) == pytest.approx(
        epsilon_for_history([StepRun(1.1, 0.01, 300)], 1e-5, accountant), rel=1e-9
    )


def test_heterogeneous_history_is_not_merged() -> None:
    mixed = [StepRun(1.1, 0.01, 100), StepRun(2.0, 0.01, 100)]
    eps = epsilon_for_history(mixed, 1e-5, Accountant.RDP)
    assert (
        epsilon_for_history([StepRun(2.0, 0.01, 200)], 1e-5, Accountant.RDP)
        < eps
        < epsilon_for_history([StepRun(1.1, 0.01, 200)], 1e-5, Accountant.RDP)
    )


@pytest.mark.parametrize("accountant", list(Accountant))
def test_calibration_covers_whole_schedule(accountant: Accountant) -> None:
    cfg = config(
        noise_multiplier=None,
        target_epsilon=3.0,
        epsilon_budget=3.0,
        planned_rounds=5,
        local_epochs=2,
        accountant=accountant,
    )
    n = 1000
    sigma = calibrate_noise_multiplier(cfg, n)
    q = sample_rate_for(n, cfg.batch_size)
    total = cfg.planned_rounds * steps_per_round(cfg, n)
    assert total == 5 * 2 * 50
    eps = epsilon_for_history([StepRun(sigma, q, total)], cfg.delta, accountant)
    assert 3.0 - 0.05 < eps <= 3.0
    # One more round than planned must exceed the target: σ is not per-round.
    over = epsilon_for_history(
        [StepRun(sigma, q, total + total // 5)], cfg.delta, accountant
    )
    assert over > 3.0


def test_given_noise_multiplier_is_returned_unchanged() -> None:
    assert calibrate_noise_multiplier(config(noise_multiplier=0.9), 500) == 0.9


def test_sample_rate_is_opacus_convention() -> None:
    assert sample_rate_for(1000, 64) == 1 / 16
    assert sample_rate_for(10, 64) == 1.0
