"""Small models, data and configs shared by the dp tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from dp import ChaCha20Random, DPConfig, PrivateClient

N_EXAMPLES = 200
FEATURES = 6


def dataset(n: int = N_EXAMPLES, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def model(seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return m


def config(**overrides: object) -> DPConfig:
    base: dict[str, object] = {
        "noise_multiplier": 1.1,
        "delta": 1e-4,
        "max_grad_norm": 1.0,
        "epsilon_budget": 10.0,
        "planned_rounds": 3,
        "batch_size": 20,
    }
    base.update(overrides)
    return DPConfig(**base)  # type: ignore[arg-type]


def fixed_rng(tag: int = 1) -> ChaCha20Random:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return ChaCha20Random.insecure_from_key_for_testing(bytes([tag]) * 32)


def client(
    path: Path, cfg: DPConfig | None = None, *, rng_tag: int | None = None
) -> PrivateClient:
    rng = fixed_rng(rng_tag) if rng_tag is not None else None
    return PrivateClient("client-a", N_EXAMPLES, cfg or config(), path, rng=rng)
