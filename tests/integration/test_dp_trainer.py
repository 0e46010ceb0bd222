"""The DP trainer in the federation loop: budget first, ledgers, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import dp
from core import Federation, FederationConfig, PlainAggregator, to_dataset
from core.dp_trainer import DPTrainer, ledger_path, prepare_dp_model
from core.interfaces import ClientDataset, ClientDeclined, ClientUpdate, TrainTask
from core.params import ParamSpec


def _clients(n: int = 3, rows: int = 60) -> list[ClientDataset]:
    g = torch.Generator().manual_seed(0)
    out = []
    for cid in range(n):
        x = torch.randn(rows, 4, generator=g)
        y = (x[:, 0] + 0.1 * torch.randn(rows, generator=g) > 0).long()
        out.append(to_dataset(cid, x.numpy(), y.numpy()))
    return out


def _config(**overrides: object) -> dp.DPConfig:
    base: dict[str, object] = {
        "delta": 1e-3,
        "max_grad_norm": 1.0,
        "epsilon_budget": 6.0,
        "planned_rounds": 3,
        "batch_size": 10,
        "noise_multiplier": 1.0,
    }
    base.update(overrides)
    return dp.DPConfig(**base)  # type: ignore[arg-type]


def _model() -> nn.Module:
    return prepare_dp_model(nn.Sequential(nn.Linear(4, 2)))


def test_epsilon_accumulates_across_rounds_and_ledgers_are_written(
    tmp_path: Path,
) -> None:
    clients = _clients()
    model = _model()
    trainer = DPTrainer(
        model, clients=clients, config=_config(), ledger_dir=tmp_path, learning_rate=0.5
    )
    fed = Federation(
        model=model,
        clients=clients,
        trainer=trainer,
        aggregator=PlainAggregator(),
        config=FederationConfig(rounds=3, checkpoint_every=0),
    )
    fed.run()
    eps = [c.epsilon_spent() for c in trainer.clients.values()]
    # One accountant per client over every round equals one over all steps.
    one = trainer.clients[0]
    history = [
        dp.StepRun(one.noise_multiplier, one.sample_rate, 3 * one.steps_per_round)
    ]
    expected = dp.epsilon_for_history(history, 1e-3, dp.Accountant.RDP)
    assert eps[0] == pytest.approx(expected, rel=1e-6)
    for cid in range(3):
        entries = dp.read_ledger(ledger_path(tmp_path, cid))
        assert [e.round for e in entries] == [1, 2, 3]
    summary = trainer.privacy_summary()
    assert summary["epsilon_max"] == pytest.approx(max(eps))


def test_restart_resumes_from_the_ledger(tmp_path: Path) -> None:
    clients = _clients(1)
    model = _model()
    first = DPTrainer(
        model, clients=clients, config=_config(), ledger_dir=tmp_path, learning_rate=0.5
    )
    task = TrainTask(
        round_index=1,
        client_id=0,
        global_params=ParamSpec.from_module(model).flatten(model),
        data=clients[0],
    )
    assert isinstance(first.train(task), ClientUpdate)
    spent = first.clients[0].epsilon_spent()
    again = DPTrainer(
        model, clients=clients, config=_config(), ledger_dir=tmp_path, learning_rate=0.5
    )
    assert again.clients[0].epsilon_spent() == pytest.approx(spent)
    assert spent > 0


def test_client_over_budget_declines_and_federation_stops(tmp_path: Path) -> None:
    clients = _clients()
    model = _model()
    # A budget that fits two rounds but not three.
    probe = DPTrainer(
        model,
        clients=clients,
        config=_config(epsilon_budget=100.0),
        ledger_dir=tmp_path / "probe",
        learning_rate=0.5,
    )
    per_round = probe.clients[0]
    two = dp.epsilon_for_history(
        [
            dp.StepRun(
                per_round.noise_multiplier,
                per_round.sample_rate,
                2 * per_round.steps_per_round,
            )
        ],
        1e-3,
        dp.Accountant.RDP,
    )
    trainer = DPTrainer(
        model,
        clients=clients,
        config=_config(epsilon_budget=two * 1.01, planned_rounds=2),
        ledger_dir=tmp_path / "run",
        learning_rate=0.5,
    )
    fed = Federation(
        model=model,
        clients=clients,
        trainer=trainer,
        aggregator=PlainAggregator(),
        config=FederationConfig(rounds=5, checkpoint_every=0),
    )
    result = fed.run()
    assert result.rounds_completed == 3
    assert result.history[2].skipped, "round 3: every client declines"
    assert all("privacy budget" in why for why in result.history[2].skipped.values())
    assert result.stopped_early is not None
    assert "no client can train" in result.stopped_early
    declined = trainer.train(
        TrainTask(
            round_index=4,
            client_id=0,
            global_params=fed.params,
            data=clients[0],
        )
    )
    assert isinstance(declined, ClientDeclined)
    assert declined.permanent


def test_budget_below_one_round_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(dp.BudgetTooSmallError, match="epsilon_budget"):
        DPTrainer(
            _model(),
            clients=_clients(),
            config=_config(epsilon_budget=0.01),
            ledger_dir=tmp_path,
            learning_rate=0.5,
        )
