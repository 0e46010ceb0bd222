"""An outlier membership attack on what the coordinator receives.

Four clients train one round through the shipped path, `DPTrainer` (DP-SGD,
ledger) then `SecureAggregator` (masked sums), at settings like the hospital
demo's (batch 16, lr 0.5, clip norm 1, δ = 1e-4). Client 0's data holds either
an ordinary record or, in its place, one outlier (the neighbouring relation the
ledger states ε for: one record replaced by another, same count). The attacker
sees only the aggregator's result (mean update, total weight, aggregated
metrics) and the global model everyone trained from.

Distinguishers, each a threshold fixed on calibration trials and then scored
on fresh ones:

* the projection of the mean update onto the outlier's gradient direction at
  the global model (the direction its clipped gradient pushes the model);
* any released training metric.

Each gives a Clopper–Pearson lower bound on ε at 95 %, Bonferroni-corrected
over the distinguishers. On the shipped trainer the bound must not exceed the
ε the ledger charged for the round; a trainer that also releases its raw
training loss must be caught exceeding it, so the test can fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from scipy.stats import beta
from torch import Tensor, nn

import dp
import secagg
from core import (
    AggregateResult,
    ClientDataset,
    ClientUpdate,
    DPTrainer,
    ParamSpec,
    RoundContext,
    SecureAggregator,
    TrainOutcome,
    TrainTask,
    evaluate,
    prepare_dp_model,
    to_dataset,
)

ROWS, FEATURES, CLIENTS = 64, 4, 4
DELTA = 1e-4
SIGNIFICANCE = 0.05
#: The outlier: far from every other row, labelled against the trend.
OUTLIER_X = torch.full((FEATURES,), -8.0)
OUTLIER_Y = 1


def clopper_pearson_upper(errors: int, trials: int, level: float) -> float:
    """One-sided upper confidence bound on an error rate, at `level`."""
    if errors >= trials:
        return 1.0
    return float(beta.ppf(1.0 - level, errors + 1, trials - errors))


def epsilon_lower_bound(
    inside: Sequence[float],
    outside: Sequence[float],
    threshold: float,
    *,
    level: float,
    delta: float = DELTA,
) -> float:
    """ε_LB of "score > threshold means the record was in", at confidence
    1 − level (FPR and FNR bounded at level/2 each)."""
    fp = sum(s > threshold for s in outside)
    fn = sum(s <= threshold for s in inside)
    fpr = clopper_pearson_upper(fp, len(outside), level / 2)
    fnr = clopper_pearson_upper(fn, len(inside), level / 2)
    bounds = [0.0]
    for a, b in ((fnr, fpr), (fpr, fnr)):
        if b > 0 and 1 - delta - a > b:
            bounds.append(math.log((1 - delta - a) / b))
    return max(bounds)


def test_clopper_pearson_known_answers() -> None:
    # No error in n trials: the upper bound solves (1 - p)^n = level.
    assert clopper_pearson_upper(0, 30, 0.0125) == pytest.approx(
        1 - 0.0125 ** (1 / 30), rel=1e-9
    )
    assert clopper_pearson_upper(30, 30, 0.05) == 1.0
    # Perfect separation of 30 + 30 trials at level 0.05: FPR, FNR <= 0.1155.
    bound = 1 - 0.025 ** (1 / 30)
    assert epsilon_lower_bound([1.0] * 30, [0.0] * 30, 0.5, level=0.05) == (
        pytest.approx(math.log((1 - DELTA - bound) / bound), rel=1e-9)
    )
    # Chance-level scores bound nothing.
    assert epsilon_lower_bound([0.0, 1.0] * 15, [0.0, 1.0] * 15, 0.5, level=0.05) == 0


class LeakyTrainer(DPTrainer):
    """The DP trainer plus an un-noised training metric: the loss of the
    received model on the client's own rows, as frameworks commonly report."""

    def train(self, task: TrainTask) -> TrainOutcome:
        outcome = super().train(task)
        if not isinstance(outcome, ClientUpdate):
            return outcome
        model = self._model
        ParamSpec.from_module(model).load_into(model, task.global_params)
        raw = evaluate(model, task.data).loss
        return ClientUpdate(
            client_id=outcome.client_id,
            delta=outcome.delta,
            num_examples=outcome.num_examples,
            metrics={**outcome.metrics, "train_loss": raw},
        )


@dataclass(frozen=True)
class World:
    """The fixed public setting of every trial."""

    model: nn.Module
    params: Tensor
    base: tuple[tuple[Tensor, Tensor], ...]
    config: dp.DPConfig
    settings: secagg.SecAggSettings

    def clients(self, inside: bool) -> list[ClientDataset]:
        out = []
        for cid, (x, y) in enumerate(self.base):
            if cid == 0 and inside:  # replace one record by the outlier
                x, y = x.clone(), y.clone()
                x[0], y[0] = OUTLIER_X, OUTLIER_Y
            out.append(to_dataset(cid, x.numpy(), y.numpy()))
        return out

    def outlier_direction(self) -> Tensor:
        """Unit vector along which the outlier's gradient moves the model."""
        model = self.model
        model.zero_grad()
        loss = nn.functional.cross_entropy(
            model(OUTLIER_X[None]), torch.tensor([OUTLIER_Y])
        )
        loss.backward()  # type: ignore[no-untyped-call]
        grad = torch.cat([p.grad.flatten() for p in model.parameters()])  # type: ignore[union-attr]
        direction: Tensor = -grad / grad.norm()  # SGD steps against the gradient
        return direction


def _world(**privacy: object) -> World:
    g = torch.Generator().manual_seed(0)
    base = []
    for _ in range(CLIENTS):
        x = torch.randn(ROWS, FEATURES, generator=g)
        base.append((x, (x[:, 0] > 0).long()))
    model = prepare_dp_model(nn.Sequential(nn.Linear(FEATURES, 2)))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    # σ = 3 at q = 16/64 for 4 steps: about the per-round charge of the
    # hospital demo (σ calibrated to ε = 4 over 15 rounds).
    config = dp.DPConfig(
        noise_multiplier=3.0, delta=DELTA, max_grad_norm=1.0, epsilon_budget=50.0,
        planned_rounds=1, batch_size=16, **privacy,  # type: ignore[arg-type]
    )  # fmt: skip
    settings = secagg.SecAggSettings(clip=2.0, ring_bits=48, max_weight=ROWS)
    return World(
        model=model,
        params=ParamSpec.from_module(model).flatten(model),
        base=tuple(base),
        config=config,
        settings=settings,
    )


Trial = tuple[AggregateResult, float]


def _trial(
    world: World, trainer_cls: type[DPTrainer], inside: bool, tmp: Path
) -> Trial:
    """One round; the coordinator's result and the ε client 0's ledger charged
    for it (every charge of the round, the loss release included)."""
    clients = world.clients(inside)
    trainer = trainer_cls(
        world.model, clients=clients, config=world.config, ledger_dir=tmp,
        learning_rate=0.5,
    )  # fmt: skip
    updates = []
    for c in clients:
        task = TrainTask(
            round_index=1, client_id=c.client_id, global_params=world.params.clone(),
            data=c,
        )  # fmt: skip
        outcome = trainer.train(task)
        assert isinstance(outcome, ClientUpdate), outcome
        updates.append(outcome)
    context = RoundContext(
        round_index=1, cohort=tuple(range(CLIENTS)), global_params=world.params.clone()
    )
    result = SecureAggregator(world.settings).aggregate(context, updates)
    return result, trainer.clients[0].epsilon_spent()


Score = Callable[[AggregateResult], float]


def _scores(world: World, released: Sequence[str]) -> dict[str, Score]:
    direction = world.outlier_direction()
    scores: dict[str, Score] = {
        "projection": lambda r: float(r.mean_delta @ direction),
    }
    for name in released:  # every training metric the coordinator receives
        scores[name] = _metric(name)
    return scores


def _metric(name: str) -> Score:
    return lambda r: r.metrics[name]


def _attack(
    tmp_path: Path,
    trainer_cls: type[DPTrainer],
    calibration: int,
    trials: int,
    **privacy: object,
) -> tuple[float, float, dict[str, float]]:
    """(ε_LB, the ledger's ε for the round, ε_LB per distinguisher)."""
    world = _world(**privacy)
    runs: dict[bool, list[Trial]] = {True: [], False: []}
    for k in range(calibration + trials):
        for inside in (True, False):
            runs[inside].append(
                _trial(world, trainer_cls, inside, tmp_path / f"{inside}-{k}")
            )
    released = sorted(set(runs[True][0][0].metrics) - {"clipped_coordinates",
                                                         "clipped_fraction"})
    scores = _scores(world, released)
    level = SIGNIFICANCE / len(scores)  # Bonferroni over the distinguishers
    found = {}
    for name, score in scores.items():
        cal_in = [score(r) for r, _ in runs[True][:calibration]]
        cal_out = [score(r) for r, _ in runs[False][:calibration]]
        threshold = (sum(cal_in) / calibration + sum(cal_out) / calibration) / 2
        sign = 1.0 if sum(cal_in) >= sum(cal_out) else -1.0
        found[name] = epsilon_lower_bound(
            [sign * score(r) for r, _ in runs[True][calibration:]],
            [sign * score(r) for r, _ in runs[False][calibration:]],
            sign * threshold,
            level=level,
        )
    charged = {eps for side in runs.values() for _, eps in side}
    assert len(charged) == 1, charged  # every trial is the same mechanism
    return max(found.values()), charged.pop(), found


def test_the_dp_path_leaks_no_more_than_the_ledger_charges(tmp_path: Path) -> None:
    lower, charged, found = _attack(tmp_path, DPTrainer, calibration=10, trials=60)
    print(f"DP path: ε_LB {found} against the ledger's ε {charged:.3f}")
    assert set(found) == {"projection"}  # no training metric reached it
    assert lower <= charged, (lower, charged, found)


def test_the_dp_released_loss_leaks_no_more_than_the_ledger_charges(
    tmp_path: Path,
) -> None:
    lower, charged, found = _attack(
        tmp_path, DPTrainer, calibration=10, trials=40,
        release_loss=True, loss_bound=8.0, loss_noise_multiplier=2.0,
    )  # fmt: skip
    print(f"DP-released loss: ε_LB {found} against the ledger's ε {charged:.3f}")
    assert set(found) == {"projection", "dp_train_loss"}
    assert lower <= charged, (lower, charged, found)


def test_an_unnoised_training_loss_is_caught_leaking(tmp_path: Path) -> None:
    lower, charged, found = _attack(tmp_path, LeakyTrainer, calibration=5, trials=40)
    print(f"raw loss released: ε_LB {found} against the ledger's ε {charged:.3f}")
    assert lower > charged, (found, charged)
    assert found["train_loss"] == lower  # the released loss is what gives it away
