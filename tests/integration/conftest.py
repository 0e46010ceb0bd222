"""The integration tests' kit: updates for the secure aggregator, clients and
DP configs for the DP trainer. Every builder is a fixture."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import dp
from core import ClientDataset, ClientUpdate, RoundContext, to_dataset

UpdatesFn = Callable[..., list[ClientUpdate]]
ContextFn = Callable[..., RoundContext]
ClientsFn = Callable[..., list[ClientDataset]]
DPConfigFn = Callable[..., dp.DPConfig]


@pytest.fixture
def make_updates() -> UpdatesFn:
    """`n` updates of `dim` values (scale 0.2), distinct ids, weights, metrics."""

    def make(n: int, dim: int = 40, seed: int = 0) -> list[ClientUpdate]:
        g = torch.Generator().manual_seed(seed)
        return [
            ClientUpdate(
                client_id=3 + 7 * i,
                delta=torch.randn(dim, generator=g) * 0.2,
                num_examples=5 + 11 * i,
                metrics={"train_loss": 0.3 + 0.1 * i, "train_accuracy": 0.9 - 0.05 * i},
            )
            for i in range(n)
        ]

    return make


@pytest.fixture
def make_context() -> ContextFn:
    """The round context of `updates` (a zero global model)."""

    def make(updates: list[ClientUpdate], round_index: int = 1) -> RoundContext:
        return RoundContext(
            round_index=round_index,
            cohort=tuple(u.client_id for u in updates),
            global_params=torch.zeros(updates[0].delta.numel()),
        )

    return make


@pytest.fixture
def make_clients() -> ClientsFn:
    """`n` clients of `rows` rows with 4 features and a learnable label."""

    def make(n: int = 3, rows: int = 60) -> list[ClientDataset]:
        g = torch.Generator().manual_seed(0)
        out = []
        for cid in range(n):
            x = torch.randn(rows, 4, generator=g)
            y = (x[:, 0] + 0.1 * torch.randn(rows, generator=g) > 0).long()
            out.append(to_dataset(cid, x.numpy(), y.numpy()))
        return out

    return make


@pytest.fixture
def make_dp_config() -> DPConfigFn:
    """A small DP config (σ given), with any field overridden."""

    def make(**overrides: Any) -> dp.DPConfig:
        base: dict[str, Any] = {
            "delta": 1e-3,
            "max_grad_norm": 1.0,
            "epsilon_budget": 6.0,
            "planned_rounds": 3,
            "batch_size": 10,
            "noise_multiplier": 1.0,
        }
        return dp.DPConfig(**{**base, **overrides})

    return make
