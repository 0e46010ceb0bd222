"""Fixtures shared by the ``dp`` tests (plain helpers are in ``kit.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn
from torch.utils.data import TensorDataset

import dp
import dp.local_training
from tests.dp import kit


@pytest.fixture
def draw_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """Draw noise on background threads for every model, however small."""
    monkeypatch.setattr(dp.local_training, "DRAW_AHEAD_MIN_PARAMS", 0)


@pytest.fixture
def data() -> TensorDataset:
    """The kit's ``ROWS``-example dataset."""
    return kit.dataset()


@pytest.fixture
def tiny_model() -> nn.Module:
    """A fresh linear classifier, deterministic initialisation."""
    return kit.model()


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    """Where the test's (first) client keeps its ledger; not created yet."""
    return tmp_path / "c1.jsonl"


@pytest.fixture
def three_rounds(ledger_path: Path) -> Path:
    """A valid 3-entry ledger (σ=1.1, q=0.01, 100 steps, δ=1e-5, RDP, budget 5)."""
    kit.write_ledger(ledger_path, rounds=3, budget=5.0)
    return ledger_path


@pytest.fixture
def trained_client(ledger_path: Path, data: TensorDataset) -> dp.PrivateClient:
    """A kit client that has trained rounds 0, 1 and 2."""
    c = kit.client(ledger_path)
    m = kit.model()
    for r in range(3):
        m.load_state_dict(c.train_round(m, data, round_idx=r, lr=0.5).state_dict)
    return c
