"""The secure-aggregation clip derived from the DP settings bounds real updates.

The attack: DP-SGD rounds built to push coordinates as far as they can go
(every per-example gradient clipped to C along the same direction, a large
learning rate, several epochs); no coordinate of any update may exceed the
derived clip. And the pilot uses the derived clip only when the config
leaves ``clip`` unset under DP.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import dp
from core import (
    ClientUpdate,
    DPTrainer,
    ParamSpec,
    TrainTask,
    prepare_dp_model,
    to_dataset,
)
from core.config import LocalTrainingConfig, OptimizerKind
from core.pilot.config_file import to_tables
from core.pilot.plan import make_plan
from core.pilot.schema import parse_config
from core.pilot.secagg_clip import ADAM_STEP_BOUND, derived_clip, sgd_bound


def _largest_update(
    tmp_path: Path, optimizer: dp.LocalOptimizer, lr: float, rounds: int = 3
) -> tuple[float, dp.DPConfig, int]:
    rows = 40
    # Huge features, one label: every example's gradient is clipped to C and
    # they all point the same way, the worst case for the signal term.
    x = torch.full((rows, 3), 50.0)
    y = torch.zeros(rows, dtype=torch.long)
    clients = [to_dataset(0, x.numpy(), y.numpy())]
    config = dp.DPConfig(
        noise_multiplier=0.5, delta=1e-3, max_grad_norm=1.0, epsilon_budget=1e6,
        planned_rounds=rounds, batch_size=8, local_epochs=3,
    )  # fmt: skip
    model = prepare_dp_model(nn.Sequential(nn.Linear(3, 2)))
    params = ParamSpec.from_module(model).flatten(model)
    trainer = DPTrainer(
        model, clients=clients, config=config, ledger_dir=tmp_path,
        learning_rate=lr, optimizer=optimizer,
    )  # fmt: skip
    largest = 0.0
    for r in range(1, rounds + 1):
        update = trainer.train(
            TrainTask(round_index=r, client_id=0, global_params=params, data=clients[0])
        )
        assert isinstance(update, ClientUpdate)
        largest = max(largest, float(update.delta.abs().max()))
    return largest, config, rows


def test_no_sgd_update_coordinate_exceeds_the_derived_clip(tmp_path: Path) -> None:
    largest, config, rows = _largest_update(tmp_path, dp.LocalOptimizer.SGD, lr=4.0)
    bound = sgd_bound(config, lr=4.0, num_examples=rows, noise_multiplier=0.5)
    training = LocalTrainingConfig(learning_rate=4.0, batch_size=8, local_epochs=3)
    assert derived_clip(config, training, [rows]) == bound
    assert largest <= bound
    # Still cheap in precision: a 16-bit quantisation step of the clip range is
    # far below the DP noise on one coordinate of the update.
    noise = 4.0 * 0.5 * 1.0 * (3 * 5) ** 0.5 / 8
    assert bound / (2**15 - 1) < noise / 100


def test_no_adam_update_coordinate_exceeds_the_derived_clip(tmp_path: Path) -> None:
    largest, config, rows = _largest_update(tmp_path, dp.LocalOptimizer.ADAM, lr=0.1)
    training = LocalTrainingConfig(
        learning_rate=0.1, batch_size=8, local_epochs=3, optimizer=OptimizerKind.ADAM
    )
    bound = derived_clip(config, training, [rows])
    assert bound == pytest.approx(0.1 * 15 * ADAM_STEP_BOUND)  # 3 epochs × 5 steps
    assert largest <= bound


def test_the_pilot_derives_the_clip_only_when_unset_under_dp() -> None:
    sizes = [100, 300]
    derived = make_plan(parse_config({"privacy": {"noise_multiplier": 1.0}}),
                        ["a", "b"], sizes, 10)  # fmt: skip
    cfg = parse_config({"privacy": {"noise_multiplier": 1.0}})
    assert cfg.privacy.config is not None and derived.privacy is not None
    expected = derived_clip(derived.privacy, cfg.training, sizes)
    assert derived.secure_aggregation is not None
    assert derived.secure_aggregation.clip == expected
    assert "clip" not in to_tables(cfg)["secure_aggregation"]  # not written back
    given = parse_config({"privacy": {"noise_multiplier": 1.0},
                          "secure_aggregation": {"clip": 0.25}})  # fmt: skip
    plan = make_plan(given, ["a", "b"], sizes, 10)
    assert plan.secure_aggregation is not None
    assert plan.secure_aggregation.clip == 0.25
    off = make_plan(
        parse_config({"privacy": {"enabled": False}}), ["a", "b"], sizes, 10
    )
    assert off.secure_aggregation is not None
    assert off.secure_aggregation.clip == 1.0  # the library's default, no DP bound
