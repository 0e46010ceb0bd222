"""The DP-released loss: off by default, noised as claimed, charged before release.

Statistical tests accept at α = 1e-4 per test (two-sided); the rejections of a
wrong σ sit far out.  The membership test uses a threshold fixed before the
draws and a 95 % Clopper–Pearson interval.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import TensorDataset

import dp
import dp.loss_release
from dp.loss_release import clipped_loss_sum, noised_mean, release_mean_loss
from tests.dp import kit

ALPHA = 1e-4
BOUND = 2.0
SIGMA_LOSS = 2.0

#: What a round result may carry: the noised update and accounted values.
PUBLIC_FIELDS = {
    "client_id",
    "round_idx",
    "state_dict",
    "num_examples",
    "steps",
    "noise_multiplier",
    "sample_rate",
    "epsilon_before",
    "epsilon_after",
    "epsilon_budget",
    "ledger_entry",
    "loss_entry",
    "noised_loss",
    "ledger_head",
}


def _release_config(**overrides: object) -> dp.DPConfig:
    base: dict[str, object] = {
        "release_loss": True,
        "loss_bound": BOUND,
        "loss_noise_multiplier": SIGMA_LOSS,
        "epsilon_budget": 1e4,
    }
    base.update(overrides)
    return kit.config(**base)


def _exact_mean(
    model: nn.Module, state: dict[str, torch.Tensor], data: TensorDataset
) -> float:
    """The un-noised clipped mean loss, computed independently of dp."""
    m = kit.model()
    m.load_state_dict(state)
    x, y = data.tensors
    with torch.no_grad():
        losses = nn.functional.cross_entropy(m(x), y, reduction="none")
    return float(losses.double().clamp(0, BOUND).mean())


def test_by_default_no_metric_leaves_the_client(
    ledger_path: Path, data: TensorDataset
) -> None:
    client = kit.client(ledger_path)
    res = client.train_round(kit.model(), data, round_idx=0, lr=0.5)
    assert {f.name for f in dataclasses.fields(res)} == PUBLIC_FIELDS
    assert res.noised_loss is None and res.loss_entry is None
    assert not hasattr(res, "train_loss")
    assert [e.mechanism for e in client.ledger.entries] == [
        dp.Mechanism.POISSON_SUBSAMPLED_GAUSSIAN
    ]


def test_the_release_is_its_own_charge_after_the_round_s_steps(
    ledger_path: Path, data: TensorDataset
) -> None:
    client = kit.client(ledger_path, _release_config())
    res = client.train_round(kit.model(), data, round_idx=0, lr=0.5)
    sgd, loss = client.ledger.entries
    assert (res.ledger_entry, res.loss_entry) == (sgd, loss)
    assert loss.mechanism is dp.Mechanism.GAUSSIAN_BOUNDED_SUM
    assert (loss.noise_multiplier, loss.sample_rate, loss.steps) == (SIGMA_LOSS, 1.0, 1)
    assert (loss.clip_bound, sgd.clip_bound) == (BOUND, 1.0)
    assert loss.round == sgd.round == 0
    release = dp.StepRun(SIGMA_LOSS, 1.0, 1, dp.Mechanism.GAUSSIAN_BOUNDED_SUM)
    steps = dp.StepRun(1.0, 1 / 6, 6)

    def eps(history: list[dp.StepRun]) -> float:
        return dp.epsilon_for_history(
            history,
            kit.DELTA,
            dp.Accountant.PLD,
            neighbouring=dp.Neighbouring.REPLACE_ONE,
        )

    assert sgd.epsilon == eps([steps])
    assert loss.epsilon == eps([steps, release]) > sgd.epsilon
    assert res.epsilon_after == loss.epsilon == client.epsilon_spent()
    assert res.ledger_head == dp.LedgerHead(1, loss.entry_sha256)
    assert isinstance(res.noised_loss, float) and math.isfinite(res.noised_loss)
    # The budget check before the round counted the release too.
    assert client.projected_epsilon() == eps([steps, release] * 2)


def test_release_noise_has_the_claimed_sigma_and_not_a_wrong_one() -> None:
    n, total = 60, 37.5
    rng = dp.ChaCha20Random()
    draws = np.array(
        [
            noised_mean(total, n, bound=BOUND, noise_multiplier=SIGMA_LOSS, rng=rng)
            for _ in range(20_000)
        ]
    )
    noise = draws - total / n
    std = SIGMA_LOSS * BOUND / n

    def accepts(s: float) -> bool:
        stat = float(np.sum(noise * noise)) / s**2
        chi2_ok = (
            stats.chi2.ppf(ALPHA / 2, noise.size)
            <= stat
            <= stats.chi2.isf(ALPHA / 2, noise.size)
        )
        return bool(
            chi2_ok and stats.kstest(noise, "norm", args=(0, s)).pvalue >= ALPHA
        )

    assert accepts(std)
    assert not accepts(std * 2 / 3) and not accepts(std * 3 / 2)
    assert abs(float(noise.mean())) * math.sqrt(noise.size) / std < stats.norm.isf(
        ALPHA / 2
    )


def test_released_loss_through_the_client_is_noised_as_claimed(
    ledger_path: Path, data: TensorDataset
) -> None:
    client = kit.client(ledger_path, _release_config(planned_rounds=40))
    model = kit.model()
    residuals = []
    for r in range(40):
        res = client.train_round(model, data, round_idx=r, lr=0.2)
        assert res.noised_loss is not None
        residuals.append(res.noised_loss - _exact_mean(model, res.state_dict, data))
        model.load_state_dict(res.state_dict)
    std = SIGMA_LOSS * BOUND / kit.ROWS
    x = np.array(residuals)
    assert stats.kstest(x, "norm", args=(0, std)).pvalue >= ALPHA
    stat = float(np.sum(x * x)) / std**2
    assert (
        stats.chi2.ppf(ALPHA / 2, x.size) <= stat <= stats.chi2.isf(ALPHA / 2, x.size)
    )
    # An un-noised release would leave residuals of 0 (float error at most).
    assert float(np.abs(x).max()) > 10 * std * 1e-3


def _clopper_pearson(k: int, n: int, level: float = 0.05) -> tuple[float, float]:
    lo = 0.0 if k == 0 else float(stats.beta.ppf(level / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.isf(level / 2, k + 1, n - k))
    return lo, hi


def _membership_epsilon(
    released: np.ndarray, neighbour: np.ndarray, cut: float
) -> float:
    """ε lower bound of the a-priori threshold test "released > cut" (95 %)."""
    tpr_lo, _ = _clopper_pearson(int(np.sum(neighbour > cut)), neighbour.size)
    _, fpr_hi = _clopper_pearson(int(np.sum(released > cut)), released.size)
    return math.log(max(tpr_lo - 1e-5, 1e-300) / fpr_hi)


def test_membership_of_one_outlier_stays_within_the_release_s_epsilon() -> None:
    # D holds 60 well-fitted records; in D' one of them is replaced by an
    # outlier whose loss is at the bound: the worst case for this release.
    losses = np.full(60, 0.1)
    total = float(losses.sum())
    total_outlier = total - 0.1 + BOUND
    rng = dp.ChaCha20Random()
    k = 5000

    def draws(t: float) -> np.ndarray:
        return np.array(
            [
                noised_mean(t, 60, bound=BOUND, noise_multiplier=1.0, rng=rng)
                for _ in range(k)
            ]
        )

    cut = (total + total_outlier) / 2 / 60  # fixed before the draws
    empirical = _membership_epsilon(draws(total), draws(total_outlier), cut)
    accounted = dp.epsilon_for_history(
        [dp.StepRun(1.0, 1.0, 1, dp.Mechanism.GAUSSIAN_BOUNDED_SUM)],
        1e-5,
        dp.Accountant.PLD,
        neighbouring=dp.Neighbouring.REPLACE_ONE,
    )
    assert 0.3 < empirical <= accounted
    # The same attack on the un-noised mean tells D from D' every time, and
    # certifies more than the release's ε: the test can fail.
    exact = _membership_epsilon(
        np.full(k, total / 60), np.full(k, total_outlier / 60), cut
    )
    assert exact > accounted


def test_the_charge_is_durable_before_the_release(
    ledger_path: Path, data: TensorDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = kit.client(ledger_path, _release_config())

    def crash(*args: object, **kwargs: object) -> float:
        raise RuntimeError("crash between charge and release")

    monkeypatch.setattr(dp.loss_release, "noised_mean", crash)
    with pytest.raises(RuntimeError, match="crash between charge and release"):
        client.train_round(kit.model(), data, round_idx=0, lr=0.5)
    on_disk = dp.read_ledger(ledger_path)
    assert [e.mechanism for e in on_disk] == [
        dp.Mechanism.POISSON_SUBSAMPLED_GAUSSIAN,
        dp.Mechanism.GAUSSIAN_BOUNDED_SUM,
    ]
    assert client.epsilon_spent() == on_disk[-1].epsilon


def test_a_refused_release_charges_nothing() -> None:
    charged: list[int] = []
    with pytest.raises(
        dp.PrivacyError, match=r"total must be a sum of 60 values in \[0, 2.0\]"
    ):
        release_mean_loss(
            total=121.0,
            num_examples=60,
            bound=BOUND,
            noise_multiplier=1.0,
            rng=dp.ChaCha20Random(),
            charge=lambda: charged.append(1),
        )
    with pytest.raises(dp.InvalidNoiseMultiplierError):
        release_mean_loss(
            total=1.0,
            num_examples=60,
            bound=BOUND,
            noise_multiplier=0.0,
            rng=dp.ChaCha20Random(),
            charge=lambda: charged.append(1),
        )
    assert charged == []


def test_losses_are_bounded_whatever_the_model_outputs(data: TensorDataset) -> None:
    model = kit.model()
    state = model.state_dict()

    def nan_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.full((y.shape[0],), float("nan"))

    def huge_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.full((y.shape[0],), 1e30)

    assert clipped_loss_sum(model, state, data, nan_loss, BOUND) == 60 * BOUND
    assert clipped_loss_sum(model, state, data, huge_loss, BOUND) == 60 * BOUND
    with pytest.raises(
        dp.PrivacyError, match=r"one loss per example \(reduction='none'\)"
    ):
        clipped_loss_sum(model, state, data, nn.CrossEntropyLoss(), BOUND)
    with pytest.raises(
        dp.DPConfigError, match="loss_bound must be finite and > 0; found 0"
    ):
        clipped_loss_sum(model, state, data, nan_loss, 0)


def test_calibration_counts_the_planned_releases(ledger_path: Path) -> None:
    cfg = _release_config(
        noise_multiplier=None, target_epsilon=8.0, epsilon_budget=8.0, planned_rounds=4
    )
    sigma = dp.calibrate_noise_multiplier(cfg, 60)
    release = dp.StepRun(SIGMA_LOSS, 1.0, 4, dp.Mechanism.GAUSSIAN_BOUNDED_SUM)
    planned = dp.epsilon_for_history(
        [dp.StepRun(sigma, 1 / 6, 24), release],
        kit.DELTA,
        dp.Accountant.PLD,
        neighbouring=dp.Neighbouring.REPLACE_ONE,
    )
    assert 8.0 - 0.01 <= planned <= 8.0
    without = dp.calibrate_noise_multiplier(
        kit.config(
            noise_multiplier=None,
            target_epsilon=8.0,
            epsilon_budget=8.0,
            planned_rounds=4,
        ),
        60,
    )
    assert sigma > without  # the releases take part of the target
    with pytest.raises(
        dp.DPConfigError, match=r"and 4 loss releases at loss_noise_multiplier=0\.3"
    ):
        dp.calibrate_noise_multiplier(
            dataclasses.replace(
                cfg, loss_noise_multiplier=0.3, target_epsilon=1.0, epsilon_budget=1.0
            ),
            60,
        )
