"""PrivateClient training: randomness provenance, modes, optimizers, edge batches."""

from __future__ import annotations

import math
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dp import GradSampleMode, LocalOptimizer, PrivacyError, PrivateClient
from tests.dp.helpers import N_EXAMPLES, client, config, dataset, fixed_rng, model


def _train(
    tmp_path: Path, name: str, *, rng_tag: int, torch_seed: int
) -> dict[str, torch.Tensor]:
    torch.manual_seed(torch_seed)
    c = client(tmp_path / f"{name}.jsonl", rng_tag=rng_tag)
    return c.train_round(model(), dataset(), round_idx=0, lr=0.5).state_dict


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


@pytest.mark.parametrize("mode", list(GradSampleMode))
@pytest.mark.parametrize("opt", list(LocalOptimizer))
def test_modes_and_optimizers_train_and_charge(
    tmp_path: Path, mode: GradSampleMode, opt: LocalOptimizer
) -> None:
    c = client(tmp_path / "l.jsonl", config(grad_sample_mode=mode), rng_tag=3)
    m = model()
    res = c.train_round(m, dataset(), round_idx=0, lr=0.05, optimizer=opt)
    assert res.steps == c.steps_per_round == 10
    assert res.epsilon_after == pytest.approx(c.epsilon_spent())
    assert any(not torch.equal(v, m.state_dict()[k]) for k, v in res.state_dict.items())
    assert set(res.state_dict) == set(m.state_dict())


def test_empty_poisson_batches_are_trained_through(tmp_path: Path) -> None:
    # n=3, B=1: q=1/3, so about 30 % of batches are empty.
    cfg = config(batch_size=1, delta=1e-3, epsilon_budget=1e3, planned_rounds=30)
    c = PrivateClient("tiny", 3, cfg, tmp_path / "t.jsonl", rng=fixed_rng(4))
    m = model()
    seen = 0
    for r in range(30):
        res = c.train_round(m, dataset(3), round_idx=r, lr=0.1)
        m.load_state_dict(res.state_dict)
        seen += not math.isnan(res.train_loss)  # NaN only if every batch was empty
        assert res.steps == 3
    assert sum(e.steps for e in c.ledger.entries) == 90
    assert seen >= 20


def test_mean_reduced_loss_is_refused(tmp_path: Path) -> None:
    c = client(tmp_path / "m.jsonl", rng_tag=5)
    with pytest.raises(
        PrivacyError, match=r"one loss per example \(reduction='none'\)"
    ):
        c.train_round(
            model(), dataset(), round_idx=0, lr=0.1, loss_fn=nn.CrossEntropyLoss()
        )
    # Write-ahead: the refused run was charged (over-counting is the safe side).
    assert len(c.ledger.entries) == 1


def test_dataset_of_another_size_is_refused_before_any_charge(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    c = client(path, rng_tag=6)
    with pytest.raises(PrivacyError, match=f"num_examples={N_EXAMPLES} items"):
        c.train_round(model(), dataset(N_EXAMPLES + 1), round_idx=0, lr=0.1)
    assert not path.exists()
