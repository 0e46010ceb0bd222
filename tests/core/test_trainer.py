"""The local trainer, and FedAvg reducing to centralised SGD."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from core import (
    ClientUpdate,
    ConsoleReporter,
    Federation,
    FederationConfig,
    LocalTrainer,
    LocalTrainingConfig,
    OptimizerKind,
    ParamSpec,
    PlainAggregator,
    TrainTask,
)
from core.errors import DataError
from tests.core.kit import Kit


def test_one_client_one_full_batch_step_equals_centralised_sgd(kit: Kit) -> None:
    torch.manual_seed(3)
    model = nn.Linear(4, 2)
    data = kit.clients(1, rows=40)[0]
    rounds, lr = 3, 0.3
    trainer = LocalTrainer(
        model,
        config=LocalTrainingConfig(local_epochs=1, batch_size=0, learning_rate=lr),
    )
    fed = Federation(
        model=model,
        clients=[data],
        trainer=trainer,
        aggregator=PlainAggregator(),
        config=FederationConfig(rounds=rounds, server_learning_rate=1.0),
        reporter=ConsoleReporter(quiet=True),
    )
    result = fed.run()

    central = copy.deepcopy(model)
    opt = torch.optim.SGD(central.parameters(), lr=lr)
    for _ in range(rounds):
        opt.zero_grad()
        nn.functional.cross_entropy(central(data.features), data.labels).backward()  # type: ignore[no-untyped-call]
        opt.step()
    expected = ParamSpec.from_module(central).flatten(central)
    # Only the summation order inside the full-batch loss differs.
    assert torch.allclose(result.params, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(
        result.params, ParamSpec.from_module(model).flatten(model)
    )


def test_update_is_local_minus_global_with_metrics(kit: Kit) -> None:
    model = kit.model()
    data = kit.clients(1)[0]
    trainer = LocalTrainer(
        model, config=LocalTrainingConfig(local_epochs=2, batch_size=5)
    )
    spec = trainer.spec
    before = spec.flatten(model)
    outcome = trainer.train(
        TrainTask(round_index=1, client_id=0, global_params=before.clone(), data=data)
    )
    assert isinstance(outcome, ClientUpdate)
    assert outcome.num_examples == data.num_examples
    assert outcome.delta.shape == before.shape and outcome.delta.abs().sum() > 0
    assert set(outcome.metrics) == {"train_loss", "train_accuracy"}
    assert 0 <= outcome.metrics["train_accuracy"] <= 1
    assert torch.equal(spec.flatten(model), before), "the caller's model changed"


def test_generator_state_replays_the_same_shuffles(kit: Kit) -> None:
    model = kit.model()
    data = kit.clients(1)[0]
    config = LocalTrainingConfig(
        batch_size=4, optimizer=OptimizerKind.ADAM, learning_rate=0.01
    )
    trainer = LocalTrainer(model, config=config, seed=5)
    params = trainer.spec.flatten(model)
    task = TrainTask(round_index=1, client_id=0, global_params=params, data=data)
    saved_torch, saved = torch.get_rng_state(), trainer.state_dict()
    first = trainer.train(task)
    torch.set_rng_state(saved_torch)
    trainer.load_state_dict(saved)
    again = trainer.train(task)
    assert isinstance(first, ClientUpdate) and isinstance(again, ClientUpdate)
    assert torch.equal(first.delta, again.delta)


def test_trainer_refuses_a_client_without_examples(kit: Kit) -> None:
    model = nn.Linear(4, 2)
    trainer = LocalTrainer(model, config=LocalTrainingConfig())
    empty = kit.empty_client(9)
    with pytest.raises(DataError, match="client 9 has no examples; the federation"):
        trainer.train(
            TrainTask(
                round_index=1,
                client_id=9,
                global_params=trainer.spec.flatten(model),
                data=empty,
            )
        )
