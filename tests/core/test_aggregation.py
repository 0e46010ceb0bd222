"""Weighted mean, the plain aggregator and the FedAvg(M) server step."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core import (
    ClientUpdate,
    InvalidUpdateError,
    PlainAggregator,
    RoundAborted,
    RoundContext,
    ServerOptimizer,
    weighted_mean,
)

clients = st.lists(
    st.tuples(
        st.lists(st.floats(-100, 100), min_size=5, max_size=5),
        st.integers(1, 10_000),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(clients)
def test_weighted_mean_equals_closed_form(data: list[tuple[list[float], int]]) -> None:
    deltas = [torch.tensor(d, dtype=torch.float64) for d, _ in data]
    weights = [n for _, n in data]
    expected = [sum(n * d[i] for d, n in data) / sum(weights) for i in range(5)]
    got = weighted_mean(deltas, weights)
    assert got.dtype == torch.float64
    assert torch.allclose(
        got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-9
    )


def test_weighted_mean_refuses_bad_weights() -> None:
    with pytest.raises(InvalidUpdateError, match=r"positive sum; found \[0\]"):
        weighted_mean([torch.ones(2)], [0])
    with pytest.raises(InvalidUpdateError, match="as many weights as deltas"):
        weighted_mean([torch.ones(2)], [1, 2])


def _update(cid: int, values: list[float], n: int, **metrics: float) -> ClientUpdate:
    return ClientUpdate(
        client_id=cid, delta=torch.tensor(values), num_examples=n, metrics=metrics
    )


def test_plain_aggregator_weights_updates_and_metrics_by_examples() -> None:
    updates = [
        _update(0, [1.0, 0.0], 1, train_loss=1.0, epsilon=2.0),
        _update(1, [4.0, 3.0], 3, train_loss=5.0),
    ]
    ctx = RoundContext(round_index=1, cohort=(0, 1), global_params=torch.zeros(2))
    result = PlainAggregator().aggregate(ctx, updates)
    assert torch.allclose(result.mean_delta, torch.tensor([13 / 4, 9 / 4]))
    assert result.total_weight == 4 and result.num_aggregated == 2
    assert result.metrics == {"epsilon": 2.0, "train_loss": 4.0}
    assert result.dropped == ()
    assert result.bytes_up == 2 * 8 + 4 * 3 and result.bytes_down == 2 * 8


def test_plain_aggregator_aborts_when_there_is_no_weight() -> None:
    ctx = RoundContext(round_index=4, cohort=(0,), global_params=torch.zeros(2))
    with pytest.raises(RoundAborted, match="round 4: no update with a positive"):
        PlainAggregator().aggregate(ctx, [_update(0, [1.0, 1.0], 0)])


def test_server_step_without_momentum_is_w_plus_lr_delta() -> None:
    opt = ServerOptimizer(learning_rate=0.5)
    w = torch.tensor([1.0, 2.0])
    assert torch.equal(opt.step(w, torch.tensor([2.0, -2.0])), torch.tensor([2.0, 1.0]))
    assert opt.state_dict() == {"momentum_buffer": None}


def test_server_momentum_accumulates_and_round_trips() -> None:
    opt = ServerOptimizer(learning_rate=1.0, momentum=0.5)
    w = torch.zeros(1)
    w = opt.step(w, torch.tensor([1.0]))  # m = 1
    w = opt.step(w, torch.tensor([1.0]))  # m = 1.5
    assert torch.equal(w, torch.tensor([2.5]))
    clone = ServerOptimizer(learning_rate=1.0, momentum=0.5)
    clone.load_state_dict(opt.state_dict())
    assert torch.equal(
        clone.step(w, torch.tensor([0.0])), opt.step(w, torch.tensor([0.0]))
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_server_step_refuses_non_finite_mean_and_keeps_state(bad: float) -> None:
    opt = ServerOptimizer(learning_rate=1.0, momentum=0.9)
    w = opt.step(torch.zeros(2), torch.ones(2))
    before = opt.state_dict()["momentum_buffer"].clone()
    with pytest.raises(RoundAborted, match="NaN or inf"):
        opt.step(w, torch.tensor([bad, 0.0]))
    assert torch.equal(opt.state_dict()["momentum_buffer"], before)
