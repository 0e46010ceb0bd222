"""PrivateClient: budget first, error paths, randomness provenance, training modes."""

from __future__ import annotations

import math
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import dp
from tests.dp import kit


def test_budget_refusal_leaves_the_ledger_bytes_unchanged(
    tmp_path: Path, data: TensorDataset
) -> None:
    probe = kit.client(tmp_path / "probe.jsonl")
    run = dp.StepRun(probe.noise_multiplier, probe.sample_rate, probe.steps_per_round)
    acct, rel = probe.config.accountant, probe.config.neighbouring
    two = dp.epsilon_for_history([run] * 2, kit.DELTA, acct, neighbouring=rel)
    three = dp.epsilon_for_history([run] * 3, kit.DELTA, acct, neighbouring=rel)
    budget = (two + three) / 2  # two rounds fit, the third does not
    path = tmp_path / "c1.jsonl"
    client = kit.client(path, kit.config(epsilon_budget=budget))
    model = kit.model()
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


def test_budget_below_one_round_is_refused_at_construction(ledger_path: Path) -> None:
    with pytest.raises(dp.BudgetTooSmallError) as info:
        kit.client(ledger_path, kit.config(epsilon_budget=0.1))
    assert "epsilon_budget must be at least one round's cost" in str(info.value)
    assert "found 0.1" in str(info.value)
    assert not ledger_path.exists()


@pytest.mark.parametrize("delta", [1 / 60, 0.02, 0.5])
def test_delta_not_below_one_over_n_is_refused(ledger_path: Path, delta: float) -> None:
    with pytest.raises(dp.InvalidDeltaError) as info:
        kit.client(ledger_path, kit.config(delta=delta))
    assert str(info.value).startswith("delta must be below 1/n_local = 1/60")
    assert f"found {delta!r}" in str(info.value)


@pytest.mark.parametrize("delta", [0.0, 1.0, math.nan, -1e-5])
def test_delta_out_of_range_is_refused_by_the_config(delta: float) -> None:
    with pytest.raises(dp.InvalidDeltaError, match=r"delta must be in \(0, 1\)"):
        kit.config(delta=delta)


@pytest.mark.parametrize("sigma", [math.nan, math.inf, -math.inf, 0.0, -1.0])
def test_non_finite_or_non_positive_sigma_is_refused(
    ledger_path: Path, sigma: float
) -> None:
    expected = "noise_multiplier must be a finite number > 0 (e.g. 0.5 to 5); found"
    with pytest.raises(dp.InvalidNoiseMultiplierError) as info:
        kit.config(noise_multiplier=sigma)
    assert str(info.value) == f"{expected} {sigma!r}"
    # The override path of PrivateClient checks it the same way.
    cfg = kit.config(noise_multiplier=None, target_epsilon=5.0)
    with pytest.raises(dp.InvalidNoiseMultiplierError) as info:
        dp.PrivateClient("c1", 60, cfg, ledger_path, noise_multiplier=sigma)
    assert str(info.value) == f"{expected} {sigma!r}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"client_id": ""}, "client_id must be a non-empty string; found ''"),
        ({"num_examples": 2.5}, "num_examples must be an int; found 2.5"),
        ({"num_examples": 0}, "num_examples must be >= 1; found 0"),
        ({"noise_multiplier": 2.0}, "noise_multiplier=2.0 contradicts"),
    ],
)
def test_bad_client_arguments_are_refused(
    ledger_path: Path, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"client_id": "c1", "num_examples": 60}
    args.update(kwargs)
    sigma = args.pop("noise_multiplier", None)
    with pytest.raises(dp.DPConfigError) as info:
        dp.PrivateClient(
            args["client_id"],  # type: ignore[arg-type]
            args["num_examples"],  # type: ignore[arg-type]
            kit.config(),
            ledger_path,
            noise_multiplier=sigma,  # type: ignore[arg-type]
        )
    assert str(info.value).startswith(message)


def _unsupported_models() -> list[tuple[str, nn.Module, str]]:
    return [
        (
            "batchnorm",
            nn.Sequential(
                nn.Linear(kit.FEATURES, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)
            ),
            "BatchNorm cannot support training with differential privacy",
        ),
        ("lstm", nn.LSTM(kit.FEATURES, 2), "We do not support nn.LSTM"),
        (
            "frozen",
            nn.Linear(kit.FEATURES, 2).requires_grad_(False),
            "model has no trainable parameters to privatise",
        ),
    ]


@pytest.mark.parametrize(
    ("model", "words"),
    [(m, w) for _, m, w in _unsupported_models()],
    ids=[n for n, _, _ in _unsupported_models()],
)
def test_model_opacus_cannot_privatise_is_refused_before_any_charge(
    ledger_path: Path, data: TensorDataset, model: nn.Module, words: str
) -> None:
    client = kit.client(ledger_path)
    with pytest.raises(dp.UnsupportedModelError) as info:
        client.train_round(model, data, round_idx=0, lr=0.5)
    assert words in str(info.value)
    if words.startswith(("BatchNorm", "We do not")):
        assert "model has layers Opacus cannot make private" in str(info.value)
        assert "call make_private_compatible() first" in str(info.value)
    assert not ledger_path.exists()  # nothing charged
    assert client.epsilon_spent() == 0.0


def test_make_private_compatible_fixes_batchnorm(
    ledger_path: Path, data: TensorDataset
) -> None:
    model = nn.Sequential(
        nn.Linear(kit.FEATURES, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)
    )
    fixed, changes = dp.make_private_compatible(model)
    assert isinstance(dict(fixed.named_modules())["1"], nn.GroupNorm)
    assert isinstance(model[1], nn.BatchNorm1d)  # the original is untouched
    assert len(changes) == 1 and "BatchNorm1d -> GroupNorm" in changes[0]
    res = kit.client(ledger_path).train_round(fixed, data, round_idx=0, lr=0.5)
    assert res.epsilon_after > 0
    assert set(res.state_dict) == set(fixed.state_dict())


def test_bad_round_arguments_are_refused_without_a_charge(
    ledger_path: Path, data: TensorDataset
) -> None:
    client = kit.client(ledger_path)
    model = kit.model()
    with pytest.raises(dp.DPConfigError, match="lr must be finite and > 0; found nan"):
        client.train_round(model, data, round_idx=0, lr=math.nan)
    with pytest.raises(dp.DPConfigError, match="lr must be a real number; found '1'"):
        client.train_round(model, data, round_idx=0, lr="1")  # type: ignore[arg-type]
    with pytest.raises(dp.DPConfigError, match="round_idx must be an int >= 0"):
        client.train_round(model, data, round_idx=-1, lr=0.5)
    with pytest.raises(
        dp.DPConfigError,
        match="dataset must have num_examples=60 items, the size the sample rate "
        "was fixed for; found 61",
    ):
        client.train_round(model, kit.dataset(61), round_idx=0, lr=0.5)
    assert not ledger_path.exists()
    client.train_round(model, data, round_idx=3, lr=0.5)
    before = ledger_path.read_bytes()
    with pytest.raises(dp.DPConfigError, match="last charged round \\(3\\); found 2"):
        client.train_round(model, data, round_idx=2, lr=0.5)
    assert ledger_path.read_bytes() == before


def test_ledger_of_another_client_is_refused(
    ledger_path: Path, data: TensorDataset
) -> None:
    kit.client(ledger_path).train_round(kit.model(), data, round_idx=0, lr=0.5)
    with pytest.raises(dp.LedgerMismatchError, match="client_id='c1'"):
        kit.client(ledger_path, client_id="c2")
    with pytest.raises(dp.LedgerMismatchError, match=r"delta=0\.001"):
        kit.client(ledger_path, kit.config(delta=1e-4))
    with pytest.raises(dp.LedgerMismatchError, match="neighbouring=REPLACE_ONE"):
        kit.client(ledger_path, kit.config(**kit.OPACUS_RDP))


def test_model_passed_in_is_not_modified(
    ledger_path: Path, data: TensorDataset
) -> None:
    model = kit.model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = kit.client(ledger_path).train_round(model, data, round_idx=0, lr=0.5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert any(not torch.equal(res.state_dict[k], before[k]) for k in before)


def _train(
    tmp_path: Path, name: str, *, rng_tag: int, torch_seed: int
) -> dict[str, torch.Tensor]:
    torch.manual_seed(torch_seed)
    c = kit.client(tmp_path / f"{name}.jsonl", rng_tag=rng_tag)
    return c.train_round(kit.model(), kit.dataset(), round_idx=0, lr=0.5).state_dict


def test_all_dp_randomness_comes_from_the_csprng(tmp_path: Path) -> None:
    np_state = pickle.dumps(np.random.get_state())
    py_state = random.getstate()
    a = _train(tmp_path, "a", rng_tag=1, torch_seed=0)
    b = _train(tmp_path, "b", rng_tag=1, torch_seed=12345)
    c = _train(tmp_path, "c", rng_tag=2, torch_seed=0)
    # Same ChaCha20 key, different torch seeds: identical weights, so neither
    # the noise nor the Poisson batches came from torch's generator.
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert np_state == pickle.dumps(np.random.get_state())
    assert py_state == random.getstate()


@pytest.mark.parametrize("mode", list(dp.GradSampleMode))
@pytest.mark.parametrize("opt", list(dp.LocalOptimizer))
def test_modes_and_optimizers_train_and_charge(
    ledger_path: Path,
    data: TensorDataset,
    mode: dp.GradSampleMode,
    opt: dp.LocalOptimizer,
) -> None:
    c = kit.client(ledger_path, kit.config(grad_sample_mode=mode), rng_tag=3)
    m = kit.model(hidden=8)
    res = c.train_round(m, data, round_idx=0, lr=0.05, optimizer=opt)
    assert res.steps == c.steps_per_round == 6
    assert res.epsilon_after == pytest.approx(c.epsilon_spent())
    assert any(not torch.equal(v, m.state_dict()[k]) for k, v in res.state_dict.items())
    assert set(res.state_dict) == set(m.state_dict())


def test_empty_poisson_batches_are_trained_through(tmp_path: Path) -> None:
    # n=3, B=1: q=1/3, so about 30 % of batches are empty.
    cfg = kit.config(batch_size=1, epsilon_budget=1e3, planned_rounds=30)
    c = dp.PrivateClient("tiny", 3, cfg, tmp_path / "t.jsonl", rng=kit.fixed_rng(4))
    m = kit.model()
    for r in range(30):
        res = c.train_round(m, kit.dataset(3), round_idx=r, lr=0.1)
        assert res.steps == 3
        assert all(torch.isfinite(v).all() for v in res.state_dict.values())
        m.load_state_dict(res.state_dict)
    assert sum(e.steps for e in c.ledger.entries) == 90


def test_mean_reduced_loss_is_refused(ledger_path: Path, data: TensorDataset) -> None:
    c = kit.client(ledger_path, rng_tag=5)
    with pytest.raises(
        dp.PrivacyError, match=r"one loss per example \(reduction='none'\)"
    ):
        c.train_round(
            kit.model(), data, round_idx=0, lr=0.1, loss_fn=nn.CrossEntropyLoss()
        )
    # Write-ahead: the refused run was charged (over-counting is the safe side).
    assert len(c.ledger.entries) == 1
