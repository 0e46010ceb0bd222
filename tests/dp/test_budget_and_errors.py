"""Budget first, and one negative test per configuration/model error path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import dp
from tests.dp.tinykit import FEATURES, config, tiny_dataset, tiny_model


def test_budget_refusal_leaves_the_ledger_bytes_unchanged(tmp_path: Path) -> None:
    data = tiny_dataset()
    probe = dp.PrivateClient("c1", len(data), config(), tmp_path / "probe.jsonl")
    run = dp.StepRun(probe.noise_multiplier, probe.sample_rate, probe.steps_per_round)
    two = dp.epsilon_for_history([run] * 2, 1e-3, dp.Accountant.RDP)
    three = dp.epsilon_for_history([run] * 3, 1e-3, dp.Accountant.RDP)
    budget = (two + three) / 2  # two rounds fit, the third does not
    path = tmp_path / "c1.jsonl"
    client = dp.PrivateClient("c1", len(data), config(epsilon_budget=budget), path)
    model = tiny_model()
    for r in range(2):
        client.train_round(model, data, round_idx=r, lr=0.5)
    before = path.read_bytes()
    assert not client.can_train()
    with pytest.raises(dp.BudgetExceededError) as info:
        client.train_round(model, data, round_idx=2, lr=0.5)
    err = info.value
    assert (err.client_id, err.round_idx) == ("c1", 2)
    assert err.epsilon_spent == pytest.approx(two, rel=1e-9)
    assert err.epsilon_projected == pytest.approx(three, rel=1e-9)
    assert str(err) == (
        f"client 'c1' declines round 2: it has spent ε={two:.4f} and this round "
        f"would bring it to ε={three:.4f}, above its budget ε={budget:.4f}"
    )
    assert path.read_bytes() == before
    assert len(dp.read_ledger(path)) == 2
    assert dp.BudgetExceeded is dp.BudgetExceededError


def test_budget_below_one_round_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(dp.BudgetTooSmallError) as info:
        dp.PrivateClient("c1", 60, config(epsilon_budget=0.1), tmp_path / "c.jsonl")
    assert "epsilon_budget must be at least one round's cost" in str(info.value)
    assert "found 0.1" in str(info.value)
    assert not (tmp_path / "c.jsonl").exists()


@pytest.mark.parametrize("delta", [1 / 60, 0.02, 0.5])
def test_delta_not_below_one_over_n_is_refused(tmp_path: Path, delta: float) -> None:
    with pytest.raises(dp.InvalidDeltaError) as info:
        dp.PrivateClient("c1", 60, config(delta=delta), tmp_path / "c.jsonl")
    assert str(info.value).startswith("delta must be below 1/n_local = 1/60")
    assert f"found {delta!r}" in str(info.value)


@pytest.mark.parametrize("delta", [0.0, 1.0, math.nan, -1e-5])
def test_delta_out_of_range_is_refused_by_the_config(delta: float) -> None:
    with pytest.raises(dp.InvalidDeltaError, match=r"delta must be in \(0, 1\)"):
        config(delta=delta)


@pytest.mark.parametrize("sigma", [math.nan, math.inf, -math.inf, 0.0, -1.0])
def test_non_finite_or_non_positive_sigma_is_refused(
    tmp_path: Path, sigma: float
) -> None:
    expected = "noise_multiplier must be a finite number > 0 (e.g. 0.5 to 5); found"
    with pytest.raises(dp.InvalidNoiseMultiplierError) as info:
        config(noise_multiplier=sigma)
    assert str(info.value) == f"{expected} {sigma!r}"
    # The override path of PrivateClient checks it the same way.
    cfg = config(noise_multiplier=None, target_epsilon=5.0)
    with pytest.raises(dp.InvalidNoiseMultiplierError) as info:
        dp.PrivateClient("c1", 60, cfg, tmp_path / "c.jsonl", noise_multiplier=sigma)
    assert str(info.value) == f"{expected} {sigma!r}"


def _unsupported_models() -> list[tuple[str, nn.Module, str]]:
    return [
        (
            "batchnorm",
            nn.Sequential(nn.Linear(FEATURES, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)),
            "BatchNorm cannot support training with differential privacy",
        ),
        ("lstm", nn.LSTM(FEATURES, 2), "We do not support nn.LSTM"),
        (
            "frozen",
            nn.Linear(FEATURES, 2).requires_grad_(False),
            "model has no trainable parameters to privatise",
        ),
    ]


@pytest.mark.parametrize(
    ("model", "words"),
    [(m, w) for _, m, w in _unsupported_models()],
    ids=[n for n, _, _ in _unsupported_models()],
)
def test_model_opacus_cannot_privatise_is_refused_before_any_charge(
    tmp_path: Path, model: nn.Module, words: str
) -> None:
    data = tiny_dataset()
    path = tmp_path / "c1.jsonl"
    client = dp.PrivateClient("c1", len(data), config(), path)
    with pytest.raises(dp.UnsupportedModelError) as info:
        client.train_round(model, data, round_idx=0, lr=0.5)
    assert words in str(info.value)
    if words.startswith(("BatchNorm", "We do not")):
        assert "model has layers Opacus cannot make private" in str(info.value)
        assert "call make_private_compatible() first" in str(info.value)
    assert not path.exists()  # nothing charged
    assert client.epsilon_spent() == 0.0


def test_make_private_compatible_fixes_batchnorm(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(FEATURES, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    fixed, changes = dp.make_private_compatible(model)
    assert isinstance(dict(fixed.named_modules())["1"], nn.GroupNorm)
    assert isinstance(model[1], nn.BatchNorm1d)  # the original is untouched
    assert len(changes) == 1 and "BatchNorm1d -> GroupNorm" in changes[0]
    data = tiny_dataset()
    client = dp.PrivateClient("c1", len(data), config(), tmp_path / "c1.jsonl")
    res = client.train_round(fixed, data, round_idx=0, lr=0.5)
    assert res.epsilon_after > 0
    assert set(res.state_dict) == set(fixed.state_dict())


def test_bad_round_arguments_are_refused_without_a_charge(tmp_path: Path) -> None:
    data = tiny_dataset()
    path = tmp_path / "c1.jsonl"
    client = dp.PrivateClient("c1", len(data), config(), path)
    model = tiny_model()
    with pytest.raises(dp.DPConfigError, match="lr must be finite and > 0; found nan"):
        client.train_round(model, data, round_idx=0, lr=math.nan)
    with pytest.raises(dp.DPConfigError, match="dataset must have num_examples=60"):
        client.train_round(model, tiny_dataset(rows=59), round_idx=0, lr=0.5)
    client.train_round(model, data, round_idx=3, lr=0.5)
    before = path.read_bytes()
    with pytest.raises(dp.DPConfigError, match="last charged round \\(3\\); found 2"):
        client.train_round(model, data, round_idx=2, lr=0.5)
    assert path.read_bytes() == before


def test_ledger_of_another_client_is_refused(tmp_path: Path) -> None:
    data = tiny_dataset()
    path = tmp_path / "c1.jsonl"
    dp.PrivateClient("c1", len(data), config(), path).train_round(
        tiny_model(), data, round_idx=0, lr=0.5
    )
    with pytest.raises(dp.LedgerMismatchError, match="client_id='c1'"):
        dp.PrivateClient("c2", len(data), config(), path)
    with pytest.raises(dp.LedgerMismatchError, match=r"delta=0\.001"):
        dp.PrivateClient("c1", len(data), config(delta=1e-4), path)


def test_model_passed_in_is_not_modified(tmp_path: Path) -> None:
    data = tiny_dataset()
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    client = dp.PrivateClient("c1", len(data), config(), tmp_path / "c1.jsonl")
    res = client.train_round(model, data, round_idx=0, lr=0.5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert any(not torch.equal(res.state_dict[k], before[k]) for k in before)
