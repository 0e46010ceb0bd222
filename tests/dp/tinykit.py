"""Shared fixtures for the ``dp`` tests: a tiny model, data and configs.

Test data may come from seeded torch generators; DP noise and Poisson
sampling always come from :class:`dp.ChaCha20Random`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

import dp
from dp.ledger_format import GENESIS_SHA256, LedgerEntry

ROWS = 60
FEATURES = 4
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def tiny_dataset(rows: int = ROWS, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, FEATURES, generator=g)
    y = (x[:, 0] > 0).long()
    return TensorDataset(x, y)


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 2))


def config(**overrides: object) -> dp.DPConfig:
    base: dict[str, object] = {
        "delta": 1e-3,
        "max_grad_norm": 1.0,
        "epsilon_budget": 50.0,
        "planned_rounds": 3,
        "batch_size": 10,
        "noise_multiplier": 1.0,
    }
    base.update(overrides)
    return dp.DPConfig(**base)  # type: ignore[arg-type]


def write_ledger(
    path: Path,
    *,
    client_id: str = "c1",
    rounds: int = 4,
    run: dp.StepRun | None = None,
    delta: float = 1e-5,
    accountant: dp.Accountant = dp.Accountant.RDP,
    budget: float = 50.0,
) -> tuple[dp.LedgerEntry, ...]:
    """A valid ledger of ``rounds`` charges written by :class:`dp.PrivacyLedger`."""
    step = run if run is not None else dp.StepRun(1.1, 0.01, 100)
    ledger = dp.PrivacyLedger.open(path, missing_ok=True)
    for r in range(rounds):
        eps = dp.epsilon_for_history([step] * (r + 1), delta, accountant)
        ledger.append(
            client_id=client_id,
            round_idx=r,
            run=step,
            delta=delta,
            accountant=accountant,
            epsilon=eps,
            epsilon_budget=budget,
            max_grad_norm=1.0,
            now=T0 + dt.timedelta(seconds=r),
        )
    return ledger.entries


def rechain(entries: list[LedgerEntry]) -> bytes:
    """Serialize ``entries`` with a freshly computed, valid hash chain."""
    out = b""
    prev = GENESIS_SHA256
    for seq, e in enumerate(entries):
        e = dataclasses.replace(e, seq=seq, prev_sha256=prev)
        out += e.line_bytes()
        prev = e.entry_sha256
    return out
