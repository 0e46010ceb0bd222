"""The DP trainer in the federation loop: budget first, ledgers, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

import dp
from core import (
    CheckpointMismatchError,
    ClientDataset,
    ClientDeclined,
    ClientUpdate,
    DPTrainer,
    Federation,
    FederationConfig,
    ParamSpec,
    PlainAggregator,
    TrainTask,
    ledger_path,
    prepare_dp_model,
)
from tests.integration.conftest import ClientsFn, DPConfigFn


def _federation(
    model: nn.Module, clients: list[ClientDataset], trainer: DPTrainer, *, rounds: int
) -> Federation:
    return Federation(
        model=model,
        clients=clients,
        trainer=trainer,
        aggregator=PlainAggregator(),
        config=FederationConfig(rounds=rounds, checkpoint_every=0),
    )


def _model() -> nn.Module:
    return prepare_dp_model(nn.Sequential(nn.Linear(4, 2)))


def test_epsilon_accumulates_across_rounds_and_ledgers_are_written(
    make_clients: ClientsFn, make_dp_config: DPConfigFn, tmp_path: Path
) -> None:
    clients = make_clients()
    model = _model()
    trainer = DPTrainer(
        model, clients=clients, config=make_dp_config(), ledger_dir=tmp_path,
        learning_rate=0.5,
    )
    fed = _federation(model, clients, trainer, rounds=3)
    fed.run()
    eps = [c.epsilon_spent() for c in trainer.clients.values()]
    # One accountant per client over every round equals one over all steps.
    one = trainer.clients[0]
    history = [
        dp.StepRun(one.noise_multiplier, one.sample_rate, 3 * one.steps_per_round)
    ]
    expected = dp.epsilon_for_history(
        history, 1e-3, dp.Accountant.PLD, neighbouring=dp.Neighbouring.REPLACE_ONE
    )
    assert eps[0] == pytest.approx(expected, rel=1e-6)
    for cid in range(3):
        entries = dp.read_ledger(ledger_path(tmp_path, cid))
        assert [e.round for e in entries] == [1, 2, 3]
    summary = trainer.privacy_summary()
    assert summary["epsilon_max"] == pytest.approx(max(eps))


def test_restart_resumes_from_the_ledger(
    make_clients: ClientsFn, make_dp_config: DPConfigFn, tmp_path: Path
) -> None:
    clients = make_clients(1)
    model = _model()
    first = DPTrainer(
        model, clients=clients, config=make_dp_config(), ledger_dir=tmp_path,
        learning_rate=0.5,
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
        model, clients=clients, config=make_dp_config(), ledger_dir=tmp_path,
        learning_rate=0.5,
    )
    assert again.clients[0].epsilon_spent() == pytest.approx(spent)
    assert spent > 0


def test_client_over_budget_declines_and_federation_stops(
    make_clients: ClientsFn, make_dp_config: DPConfigFn, tmp_path: Path
) -> None:
    clients = make_clients()
    model = _model()
    # A budget that fits two rounds but not three.
    probe = DPTrainer(
        model,
        clients=clients,
        config=make_dp_config(epsilon_budget=100.0),
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
        dp.Accountant.PLD,
        neighbouring=dp.Neighbouring.REPLACE_ONE,
    )
    trainer = DPTrainer(
        model,
        clients=clients,
        config=make_dp_config(epsilon_budget=two * 1.01, planned_rounds=2),
        ledger_dir=tmp_path / "run",
        learning_rate=0.5,
    )
    fed = _federation(model, clients, trainer, rounds=5)
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


def test_budget_below_one_round_is_refused_before_training(
    make_clients: ClientsFn, make_dp_config: DPConfigFn, tmp_path: Path
) -> None:
    with pytest.raises(dp.BudgetTooSmallError, match="epsilon_budget"):
        DPTrainer(
            _model(),
            clients=make_clients(),
            config=make_dp_config(epsilon_budget=0.01),
            ledger_dir=tmp_path,
            learning_rate=0.5,
        )


def test_a_foreign_ledger_folder_in_a_checkpoint_is_refused(
    make_clients: ClientsFn, make_dp_config: DPConfigFn, tmp_path: Path
) -> None:
    trainer = DPTrainer(
        _model(), clients=make_clients(1), config=make_dp_config(),
        ledger_dir=tmp_path / "a", learning_rate=0.5,
    )  # fmt: skip
    trainer.load_state_dict(trainer.state_dict())
    with pytest.raises(
        CheckpointMismatchError, match="checkpoint's DP ledgers are in '/elsewhere'"
    ):
        trainer.load_state_dict({"ledger_dir": "/elsewhere"})
