"""A client wraps its model once: later rounds reuse engine, wrap and accountant.

Reuse must not change results: a round on reused objects equals the same
round on freshly built ones (same ledger history, same CSPRNG stream), bit
for bit, for SGD and for Adam (whose state is reset every round).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from dp import GradSampleMode, LocalOptimizer, PrivacyError, PrivateClient
from dp.engine import CSPRNGPrivacyEngine
from tests.dp.kit import FEATURES, config, dataset, fixed_rng
from tests.dp.kit import ROWS as N_EXAMPLES
from tests.dp.kit import mlp as model


def _parts(c: PrivateClient) -> tuple[object, ...]:
    w = c._trainer._wrapped
    assert w is not None
    return (c._engine, c._engine.accountant, w.local, w.gsm, w.optimizer)


def test_later_rounds_reuse_engine_wrap_optimizer_and_accountant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = CSPRNGPrivacyEngine.make_private

    def spy(self: CSPRNGPrivacyEngine, **kwargs: object) -> object:
        calls.append(kwargs["grad_sample_mode"])
        return real(self, **kwargs)

    monkeypatch.setattr(CSPRNGPrivacyEngine, "make_private", spy)
    c = PrivateClient("a", N_EXAMPLES, config(), tmp_path / "a.jsonl", rng=fixed_rng(1))
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    c.train_round(m, dataset(), round_idx=0, lr=0.1)
    first = _parts(c)
    for r in (1, 2):
        res = c.train_round(m, dataset(seed=r), round_idx=r, lr=0.1)
        assert all(a is b for a, b in zip(_parts(c), first, strict=True))
        m.load_state_dict(res.state_dict)  # the coordinator's next global model
    assert calls == ["ghost"] and c._trainer.builds == 1
    assert len(c._engine.accountant.history) == 1
    assert c._engine.accountant.history[0][2] == 3 * c.steps_per_round
    assert any(not torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("opt", list(LocalOptimizer))
def test_a_reused_round_equals_a_freshly_built_one(
    tmp_path: Path, opt: LocalOptimizer
) -> None:
    reused_rng, fresh_rng = fixed_rng(6), fixed_rng(6)
    # Drawing round 2's noise between rounds would take it from the stream
    # before round 2's batches; the clients compared here draw it in round.
    reused = PrivateClient(
        "c",
        N_EXAMPLES,
        config(),
        tmp_path / "r.jsonl",
        rng=reused_rng,
        prefetch_noise=False,
    )
    fresh = PrivateClient(
        "c",
        N_EXAMPLES,
        config(),
        tmp_path / "f.jsonl",
        rng=fresh_rng,
        prefetch_noise=False,
    )
    m = model()
    first = reused.train_round(m, dataset(), round_idx=0, lr=0.05, optimizer=opt)
    other = fresh.train_round(m, dataset(), round_idx=0, lr=0.05, optimizer=opt)
    assert all(torch.equal(first.state_dict[k], v) for k, v in other.state_dict.items())
    m.load_state_dict(first.state_dict)
    again = reused.train_round(m, dataset(seed=1), round_idx=1, lr=0.02, optimizer=opt)
    # A new client on a copy of the same ledger, continuing the same stream:
    # engine, wrap, optimizer and accountant all built from scratch.
    shutil.copy(tmp_path / "f.jsonl", tmp_path / "f2.jsonl")
    rebuilt = PrivateClient(
        "c", N_EXAMPLES, config(), tmp_path / "f2.jsonl", rng=fresh_rng
    )
    new = rebuilt.train_round(m, dataset(seed=1), round_idx=1, lr=0.02, optimizer=opt)
    assert reused._trainer.builds == 1 and rebuilt._trainer.builds == 1
    for k, v in new.state_dict.items():
        assert torch.equal(again.state_dict[k], v), k
    assert again.epsilon_after == new.epsilon_after


def test_another_architecture_or_optimizer_rebuilds(tmp_path: Path) -> None:
    c = PrivateClient("b", N_EXAMPLES, config(), tmp_path / "b.jsonl", rng=fixed_rng(2))
    c.train_round(model(), dataset(), round_idx=0, lr=0.1)
    wider = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, 2))
    res = c.train_round(wider, dataset(), round_idx=1, lr=0.1)
    assert c._trainer.builds == 2
    assert res.state_dict["0.weight"].shape == (16, FEATURES)
    c.train_round(wider, dataset(), round_idx=2, lr=0.1, optimizer=LocalOptimizer.ADAM)
    assert c._trainer.builds == 3
    assert c._engine.accountant.history[0][2] == 3 * c.steps_per_round


def test_the_caller_model_is_never_modified(tmp_path: Path) -> None:
    c = PrivateClient("d", N_EXAMPLES, config(), tmp_path / "d.jsonl", rng=fixed_rng(3))
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    for r in range(2):
        res = c.train_round(m, dataset(), round_idx=r, lr=0.5)
        assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
        assert any(not torch.equal(before[k], v) for k, v in res.state_dict.items())
        # Returned weights are copies: editing them cannot reach the client.
        res.state_dict["0.weight"].zero_()
    wrapped = c._trainer._wrapped
    assert wrapped is not None
    assert not torch.equal(
        wrapped.local.state_dict()["0.weight"], torch.zeros(8, FEATURES)
    )


@pytest.mark.parametrize("mode", [GradSampleMode.GHOST, GradSampleMode.HOOKS])
def test_a_round_cut_short_does_not_poison_the_next(
    tmp_path: Path, mode: GradSampleMode
) -> None:
    cfg = config(grad_sample_mode=mode)
    c = PrivateClient("e", N_EXAMPLES, cfg, tmp_path / "e.jsonl", rng=fixed_rng(4))
    m = model()
    c.train_round(m, dataset(), round_idx=0, lr=0.1)
    # Fails after the forward pass of its first step: Opacus has recorded
    # activations that no backward pass consumed.
    with pytest.raises(PrivacyError, match="one loss per example"):
        c.train_round(m, dataset(), round_idx=1, lr=0.1, loss_fn=nn.CrossEntropyLoss())
    res = c.train_round(m, dataset(), round_idx=2, lr=0.1)
    assert res.steps == c.steps_per_round
    assert c._trainer.builds == 2 and c.grad_sample_mode is mode
