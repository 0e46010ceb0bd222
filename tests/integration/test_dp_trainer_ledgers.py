"""The DP trainer's side of the ledgers and of what leaves a client: recorded
heads, rollback refusal, the heads of each round in ``metrics.jsonl``, and no
training metric unless a DP-released loss is configured."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

import dp
from core import (
    ClientDataset,
    ClientDeclined,
    ClientUpdate,
    DPTrainer,
    Federation,
    FederationConfig,
    ParamSpec,
    PlainAggregator,
    TrainOutcome,
    TrainTask,
    ledger_path,
    prepare_dp_model,
)
from tests.integration.conftest import ClientsFn, DPConfigFn


def _model() -> nn.Module:
    return prepare_dp_model(nn.Sequential(nn.Linear(4, 2)))


def _train(
    trainer: DPTrainer, model: nn.Module, clients: list[ClientDataset], r: int, cid: int
) -> TrainOutcome:
    return trainer.train(TrainTask(
        round_index=r, client_id=cid,
        global_params=ParamSpec.from_module(model).flatten(model), data=clients[cid],
    ))  # fmt: skip


def test_an_update_carries_no_metric_unless_a_dp_loss_release_is_configured(
    make_clients: ClientsFn, make_dp_config: DPConfigFn, tmp_path: Path
) -> None:
    clients, model = make_clients(1), _model()
    plain = DPTrainer(model, clients=clients, config=make_dp_config(),
                      ledger_dir=tmp_path / "a", learning_rate=0.5)  # fmt: skip
    update = _train(plain, model, clients, 1, 0)
    assert isinstance(update, ClientUpdate) and update.metrics == {}
    config = make_dp_config(
        release_loss=True, loss_bound=4.0, loss_noise_multiplier=1.0
    )
    released = DPTrainer(model, clients=clients, config=config,
                         ledger_dir=tmp_path / "b", learning_rate=0.5)  # fmt: skip
    update = _train(released, model, clients, 1, 0)
    assert isinstance(update, ClientUpdate)
    assert set(update.metrics) == {"dp_train_loss"}
    # The release was charged to the same ledger, as a mechanism of its own.
    entries = dp.read_ledger(ledger_path(tmp_path / "b", 0))
    assert [e.mechanism for e in entries] == [
        dp.Mechanism.POISSON_SUBSAMPLED_GAUSSIAN, dp.Mechanism.GAUSSIAN_BOUNDED_SUM
    ]


def test_a_ledger_behind_its_recorded_head_is_refused_for_good(
    make_clients: ClientsFn, make_dp_config: DPConfigFn, tmp_path: Path
) -> None:
    clients, model = make_clients(2), _model()
    first = DPTrainer(model, clients=clients, config=make_dp_config(),
                      ledger_dir=tmp_path, learning_rate=0.5)  # fmt: skip
    for r in (1, 2, 3):
        for cid in (0, 1):
            assert isinstance(_train(first, model, clients, r, cid), ClientUpdate)
    recorded = first.recorded_heads
    assert recorded["client-0"].seq == 2
    assert first.round_details() == {
        "ledger_heads": {c: h.to_json() for c, h in recorded.items()}
    }
    path = ledger_path(tmp_path, 0)
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:1]))
    again = DPTrainer(model, clients=clients, config=make_dp_config(),
                      ledger_dir=tmp_path, learning_rate=0.5,
                      recorded_heads=recorded)  # fmt: skip
    refused = _train(again, model, clients, 1, 0)
    assert isinstance(refused, ClientDeclined) and refused.permanent
    assert refused.reason.startswith("client 'client-0': ledger ")
    assert "refusing to train on a rolled-back ledger" in refused.reason
    assert len(path.read_bytes().splitlines()) == 1  # nothing was charged
    assert isinstance(_train(again, model, clients, 1, 1), ClientUpdate)
    # Only the participant's head is this round's record.
    assert set(again.round_details()["ledger_heads"]) == {"client-1"}


def test_every_round_line_records_its_participants_heads(
    make_clients: ClientsFn, make_dp_config: DPConfigFn, tmp_path: Path
) -> None:
    clients, model = make_clients(), _model()
    trainer = DPTrainer(model, clients=clients, config=make_dp_config(),
                        ledger_dir=tmp_path / "ledgers", learning_rate=0.5)  # fmt: skip
    fed = Federation(
        model=model, clients=clients, trainer=trainer, aggregator=PlainAggregator(),
        config=FederationConfig(rounds=2, checkpoint_every=0), run_dir=tmp_path,
    )  # fmt: skip
    fed.run()
    log = (tmp_path / "metrics.jsonl").read_text().splitlines()
    lines = [json.loads(x) for x in log]
    rounds = [x for x in lines if x["type"] == "round"]
    for r, line in enumerate(rounds):
        assert line["round"] == r + 1  # the standard members stay
        assert {c: h["seq"] for c, h in line["ledger_heads"].items()} == {
            f"client-{cid}": r for cid in range(3)
        }
    recorded = dp.read_recorded_heads(tmp_path / "metrics.jsonl")
    assert recorded["client-0"][-1] == trainer.recorded_heads["client-0"]
