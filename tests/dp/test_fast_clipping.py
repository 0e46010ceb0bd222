"""Fast gradient clipping (Opacus "ghost") against hooks and a slow oracle.

The oracle clips every example's gradient by hand, one backward pass per
example; with zero noise and every example in the batch (q = 1) the update of
each per-sample method must equal it.  With noise, the same ChaCha20 key
gives the same Poisson batches and the same noise to both methods, so their
weights may differ only by float rounding.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from dp import DPConfig, GradSampleMode, PrivateClient, UnsupportedModelError
from dp.config import Accountant
from dp.engine import (
    CSPRNGDPOptimizer,
    CSPRNGDPOptimizerFastGradientClipping,
    CSPRNGPrivacyEngine,
    LocalOptimizer,
)
from dp.local_training import DPSGDSettings, LocalDPTrainer
from tests.dp.kit import FEATURES, config, dataset, fixed_rng
from tests.dp.kit import ROWS as N_EXAMPLES
from tests.dp.kit import mlp as model

LOSS = nn.CrossEntropyLoss(reduction="none")


class EmbedConv(nn.Module):
    """Embedding and Linear (ghost norms) next to Conv1d and GroupNorm (per-layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 4)
        self.conv = nn.Conv1d(4, 4, 2)
        self.norm = nn.GroupNorm(2, 4)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv(self.embed(x).transpose(1, 2)))
        out: torch.Tensor = self.head(torch.relu(h).flatten(1))
        return out


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(FEATURES, FEATURES)
        self.outer = nn.Linear(FEATURES, FEATURES)
        self.outer.weight = self.inner.weight
        self.head = nn.Linear(FEATURES, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.outer(torch.relu(self.inner(x))))
        return out


class Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(FEATURES, FEATURES)
        self.head = nn.Linear(FEATURES, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.block(torch.relu(self.block(x))))
        return out


def token_data(n: int = N_EXAMPLES) -> TensorDataset:
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 12, (n, 3), generator=gen)
    return TensorDataset(x, (x[:, 0] > 5).long())


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module


def oracle_step(
    m: nn.Module, data: TensorDataset, clip: float, lr: float, batch: int
) -> dict[str, torch.Tensor]:
    """w − lr · Σᵢ clip(∇lossᵢ) / B, one example at a time."""
    params = dict(m.named_parameters())
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    for x, y in zip(*data.tensors, strict=True):
        grads = torch.autograd.grad(
            LOSS(m(x[None]), y[None]).sum(), list(params.values())
        )
        norm = torch.stack([(g.double() ** 2).sum() for g in grads]).sum().sqrt()
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for k, g in zip(params, grads, strict=True):
            total[k] += factor * g
    return {k: (p - lr * total[k] / batch).detach() for k, p in params.items()}


def one_full_batch_step(
    m: nn.Module, data: TensorDataset, mode: GradSampleMode, clip: float
) -> dict[str, torch.Tensor]:
    n = len(data)
    engine = CSPRNGPrivacyEngine(
        accountant=Accountant.RDP, rng=fixed_rng(1), normaliser=float(n)
    )
    settings = DPSGDSettings(
        noise_multiplier=0.0,
        max_grad_norm=clip,
        steps_per_epoch=1,
        grad_sample_mode=mode,
    )
    trainer = LocalDPTrainer(engine, settings)
    out = trainer.run(m, data, epochs=1, lr=0.3, loss_fn=LOSS, kind=LocalOptimizer.SGD)
    assert out.steps == 1 and out.examples_seen == n  # q = 1: everyone is in
    assert trainer.grad_sample_mode is mode
    return out.state_dict


@pytest.mark.parametrize(
    ("make", "data"),
    [(lambda: model(), dataset(24)), (lambda: seeded(EmbedConv()), token_data(24))],
    ids=["mlp", "embed-conv-groupnorm"],
)
@pytest.mark.parametrize("mode", list(GradSampleMode))
def test_zero_noise_update_equals_the_per_example_oracle(make, data, mode) -> None:
    m = make()
    norms = []
    for x, y in zip(*data.tensors, strict=True):
        m.zero_grad()
        LOSS(m(x[None]), y[None]).sum().backward()
        norms.append(float(torch.sqrt(sum((p.grad**2).sum() for p in m.parameters()))))
    clip = sorted(norms)[len(norms) // 2]  # about half the examples get clipped
    expected = oracle_step(m, data, clip, 0.3, len(data))
    got = one_full_batch_step(m, data, mode, clip)
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(got[k], p) for k, p in m.named_parameters())


@pytest.mark.parametrize("opt", list(LocalOptimizer))
def test_ghost_agrees_with_hooks_under_the_same_noise_stream(
    tmp_path: Path, opt: LocalOptimizer
) -> None:
    results = {}
    for mode in (GradSampleMode.GHOST, GradSampleMode.HOOKS):
        cfg = config(grad_sample_mode=mode)
        c = PrivateClient(
            "c", N_EXAMPLES, cfg, tmp_path / f"{mode.value}.jsonl", rng=fixed_rng(9)
        )
        m = model()
        for r in range(2):
            res = c.train_round(m, dataset(), round_idx=r, lr=0.05, optimizer=opt)
            m.load_state_dict(res.state_dict)
        assert c.grad_sample_mode is mode
        results[mode] = res
    ghost, hooks = results[GradSampleMode.GHOST], results[GradSampleMode.HOOKS]
    for k, v in hooks.state_dict.items():
        torch.testing.assert_close(ghost.state_dict[k], v, rtol=1e-5, atol=1e-6)


def test_ghost_is_the_default_and_trains_empty_batches_with_embeddings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # n = 3, B = 1: q = 1/3, so about 30 % of batches are empty; hooks-mode
    # Opacus fails on an empty batch through an Embedding layer.
    empties = []
    real = CSPRNGDPOptimizerFastGradientClipping.prepare_empty_step

    def spy(self: CSPRNGDPOptimizerFastGradientClipping) -> None:
        empties.append(1)
        real(self)

    monkeypatch.setattr(
        CSPRNGDPOptimizerFastGradientClipping, "prepare_empty_step", spy
    )
    cfg = DPConfig(
        noise_multiplier=1.0, delta=1e-3, max_grad_norm=1.0, epsilon_budget=1e3,
        planned_rounds=20, batch_size=1,
    )  # fmt: skip
    c = PrivateClient("e", 3, cfg, tmp_path / "e.jsonl", rng=fixed_rng(2))
    m = seeded(EmbedConv())
    start = {k: v.clone() for k, v in m.state_dict().items()}
    for r in range(20):
        res = c.train_round(m, token_data(3), round_idx=r, lr=0.1)
        assert res.steps == 3
        m.load_state_dict(res.state_dict)
    assert c.grad_sample_mode is GradSampleMode.GHOST
    assert sum(e.steps for e in c.ledger.entries) == 60
    assert 5 <= len(empties) <= 40  # ~18 expected of 60 steps
    assert any(not torch.equal(start[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (Tied, r"parameter outer\.weight is tied to inner\.weight"),
        (Reused, r"module\(s\) block called more than once per forward pass"),
    ],
)
def test_unsupported_models_fall_back_to_hooks_and_say_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make, reason: str
) -> None:
    c = PrivateClient("t", N_EXAMPLES, config(), tmp_path / "t.jsonl", rng=fixed_rng(4))
    m = seeded(make())
    with caplog.at_level(logging.WARNING, logger="dp.local_training"):
        res = c.train_round(m, dataset(), round_idx=0, lr=0.05)
    assert c.grad_sample_mode is GradSampleMode.HOOKS
    assert res.steps == c.steps_per_round
    (record,) = [r for r in caplog.records if r.name == "dp.local_training"]
    assert "fast gradient clipping unavailable, using hooks" in record.getMessage()
    assert re.search(reason, record.getMessage())


class ReusedForBatches(nn.Module):
    """Reuses a Linear only for batches of two or more: the one-example probe
    cannot see it, so Opacus refuses during the round."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(FEATURES, FEATURES)
        self.head = nn.Linear(FEATURES, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(x)
        if x.shape[0] > 1:
            h = self.block(torch.relu(h))
        out: torch.Tensor = self.head(h)
        return out


def test_reuse_the_probe_misses_is_refused_with_a_named_error(tmp_path: Path) -> None:
    c = PrivateClient("s", N_EXAMPLES, config(), tmp_path / "s.jsonl", rng=fixed_rng(5))
    with pytest.raises(
        UnsupportedModelError,
        match=r"^fast gradient clipping cannot train this model \(Parameter tying is "
        r"not supported with Ghost Clipping\); set "
        r"DPConfig.grad_sample_mode=GradSampleMode.HOOKS$",
    ):
        c.train_round(seeded(ReusedForBatches()), dataset(), round_idx=0, lr=0.1)
    assert len(c.ledger.entries) == 1  # write-ahead: charged, nothing released
    hooks = PrivateClient(
        "h",
        N_EXAMPLES,
        config(grad_sample_mode=GradSampleMode.HOOKS),
        tmp_path / "h.jsonl",
        rng=fixed_rng(5),
    )
    res = hooks.train_round(seeded(ReusedForBatches()), dataset(), round_idx=0, lr=0.1)
    assert res.steps == hooks.steps_per_round


@pytest.mark.parametrize("mode", [GradSampleMode.HOOKS, GradSampleMode.FUNCTORCH])
def test_per_sample_modes_also_train_empty_batches_with_embeddings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: GradSampleMode
) -> None:
    empties = []
    real = CSPRNGDPOptimizer.prepare_empty_step

    def spy(self: CSPRNGDPOptimizer) -> None:
        empties.append(1)
        real(self)

    monkeypatch.setattr(CSPRNGDPOptimizer, "prepare_empty_step", spy)
    cfg = DPConfig(
        noise_multiplier=1.0, delta=1e-3, max_grad_norm=1.0, epsilon_budget=1e3,
        planned_rounds=10, batch_size=1, grad_sample_mode=mode,
    )  # fmt: skip
    c = PrivateClient("e", 3, cfg, tmp_path / "e.jsonl", rng=fixed_rng(2))
    m = seeded(EmbedConv())
    for r in range(10):
        m.load_state_dict(
            c.train_round(m, token_data(3), round_idx=r, lr=0.1).state_dict
        )
    assert c.grad_sample_mode is mode
    assert 2 <= len(empties) <= 20  # ~9 expected of 30 steps
