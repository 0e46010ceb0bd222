"""The secure aggregator against the plain one, and its failure paths."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import secagg
from core import (
    CheckpointMismatchError,
    ClientUpdate,
    ConfigError,
    DropoutSimulation,
    InvalidUpdateError,
    PlainAggregator,
    RoundAborted,
    SecureAggregator,
)
from tests.core.kit import Kit
from tests.integration.conftest import ContextFn, UpdatesFn


def _settings(**overrides: object) -> secagg.SecAggSettings:
    return secagg.SecAggSettings(**{"max_weight": 128, **overrides})  # type: ignore[arg-type]


def _step(settings: secagg.SecAggSettings) -> float:
    """One quantisation step: clip / (2^(value_bits-1) - 1)."""
    return settings.clip / ((1 << (settings.value_bits - 1)) - 1)


def test_secure_mean_equals_plain_mean_within_quantisation_error(
    make_updates: UpdatesFn, make_context: ContextFn
) -> None:
    updates = make_updates(6)
    settings = _settings(clip=1.0, value_bits=16)
    agg = SecureAggregator(settings)
    secure = agg.aggregate(make_context(updates), updates)
    plain = PlainAggregator().aggregate(make_context(updates), updates)
    # A weighted mean of stochastically rounded values is off by less than
    # one step.
    err = float((secure.mean_delta - plain.mean_delta).abs().max())
    assert err < _step(settings), f"max error {err} exceeds one quantisation step"
    assert secure.total_weight == plain.total_weight
    for key, value in plain.metrics.items():
        assert secure.metrics[key] == pytest.approx(
            value, abs=agg.metric_bound * _step(settings)
        )
    assert secure.metrics["clipped_coordinates"] == 0
    assert secure.dropped == ()
    assert secure.num_aggregated == 6


def test_clipped_coordinates_are_counted_not_wrapped(
    make_updates: UpdatesFn, make_context: ContextFn
) -> None:
    updates = make_updates(3)
    big = ClientUpdate(
        client_id=99,
        delta=torch.full((40,), 5.0),
        num_examples=1,
        metrics=dict(updates[0].metrics),
    )
    result = SecureAggregator(_settings(clip=1.0)).aggregate(
        make_context([*updates, big]), [*updates, big]
    )
    assert result.metrics["clipped_coordinates"] == 40
    assert bool((result.mean_delta.abs() <= 1.0 + 1e-6).all())


def test_a_weight_above_max_weight_is_refused_not_capped(
    make_updates: UpdatesFn, make_context: ContextFn
) -> None:
    updates = make_updates(3)  # weights 5, 16 and 27
    agg = SecureAggregator(_settings(max_weight=16))
    with pytest.raises(InvalidUpdateError, match="secure aggregation refused an input"):
        agg.aggregate(make_context(updates), updates)
    assert agg.last_session is None, "a session ran with a capped weight"


def test_one_client_is_refused(
    make_updates: UpdatesFn, make_context: ContextFn
) -> None:
    updates = make_updates(1)
    with pytest.raises(RoundAborted, match="at least 2 clients"):
        SecureAggregator(_settings()).aggregate(make_context(updates), updates)


def test_too_many_dropouts_abort_the_round(
    make_updates: UpdatesFn, make_context: ContextFn
) -> None:
    updates = make_updates(6)
    agg = SecureAggregator(
        _settings(), simulation=DropoutSimulation(dropout_rate=0.99, seed=3)
    )
    with pytest.raises(RoundAborted, match="secure aggregation aborted"):
        agg.aggregate(make_context(updates), updates)


def test_survivors_are_aggregated_exactly_when_some_drop(
    make_updates: UpdatesFn, make_context: ContextFn
) -> None:
    updates = make_updates(10, seed=4)
    settings = _settings(dropout_tolerance=0.5)
    # The first seed whose simulated schedule loses at least one input (a
    # client vanishing before Unmasking still counts: its input arrived).
    for seed in range(50):
        simulation = DropoutSimulation(dropout_rate=0.3, seed=seed)
        agg = SecureAggregator(settings, simulation=simulation)
        try:
            result = agg.aggregate(make_context(updates), updates)
        except RoundAborted:  # more dropped than the clients accept
            continue
        if result.dropped:
            break
    assert result.dropped, "no seed in 50 dropped a client at rate 0.3"
    kept = [u for u in updates if u.client_id not in result.dropped]
    assert result.num_aggregated == len(kept)
    plain = PlainAggregator().aggregate(make_context(kept), kept)
    assert float((result.mean_delta - plain.mean_delta).abs().max()) < _step(settings)
    assert result.total_weight == plain.total_weight


def test_metric_schema_must_match(
    make_updates: UpdatesFn, make_context: ContextFn
) -> None:
    updates = make_updates(3)
    odd = ClientUpdate(client_id=1, delta=torch.zeros(40), num_examples=2, metrics={})
    with pytest.raises(RoundAborted, match="different metric names"):
        SecureAggregator(_settings()).aggregate(
            make_context([*updates, odd]), [*updates, odd]
        )


def test_bad_simulation_and_metric_bound_name_the_field() -> None:
    with pytest.raises(
        ConfigError, match=r"DropoutSimulation.dropout_rate must be in "
        r"\[0, 1\); found 1.0"
    ):
        DropoutSimulation(dropout_rate=1.0)
    with pytest.raises(
        ConfigError, match=r"SecureAggregator.metric_bound must be in "
        r"\(0, inf\]; found 0"
    ):
        SecureAggregator(_settings(), metric_bound=0)


def test_bit_budget_overflow_aborts_with_the_knob_to_turn(
    make_updates: UpdatesFn, make_context: ContextFn
) -> None:
    updates = make_updates(3)
    # Fits one client (24 + 11 + 1 = 36 <= 36) but not a cohort of three.
    agg = SecureAggregator(_settings(value_bits=24, ring_bits=36, max_weight=2**10))
    with pytest.raises(RoundAborted, match=r"bit budget exceeded.*raise ring_bits"):
        agg.aggregate(make_context(updates), updates)


def test_hardened_mode_recovers_the_mean_with_signed_identities(
    make_updates: UpdatesFn, make_context: ContextFn
) -> None:
    updates = make_updates(6, seed=2)
    settings = _settings(
        mode=secagg.SecurityMode.HARDENED, corrupt_fraction=0.1, dropout_tolerance=0.2
    )
    agg = SecureAggregator(settings)
    first = agg.aggregate(make_context(updates), updates)
    plain = PlainAggregator().aggregate(make_context(updates), updates)
    assert float((first.mean_delta - plain.mean_delta).abs().max()) < _step(settings)
    # Identities are long-term: the same keys sign the next round's session.
    keys = dict(agg._identity_keys)
    agg.aggregate(make_context(updates, round_index=2), updates)
    assert agg._identity_keys == keys


def test_a_cohort_the_clients_refuse_aborts_the_round(
    make_updates: UpdatesFn, make_context: ContextFn
) -> None:
    updates = make_updates(4)
    # Valid settings, but no threshold of 4 survives 25 % dropping out while
    # staying above 40 % assumed corrupt.
    settings = _settings(
        mode=secagg.SecurityMode.HARDENED, corrupt_fraction=0.4, dropout_tolerance=0.25
    )
    refused = "refused its config: no hardened threshold for a complete graph of 4"
    with pytest.raises(RoundAborted, match=refused):
        SecureAggregator(settings).aggregate(make_context(updates), updates)


def test_it_has_no_state_and_refuses_someone_elses() -> None:
    agg = SecureAggregator(_settings())
    assert agg.state_dict() == {}
    with pytest.raises(
        CheckpointMismatchError, match="SecureAggregator has no state; found keys a, b"
    ):
        agg.load_state_dict({"b": 1, "a": 2})


def _grid_updates(device: str) -> list[ClientUpdate]:
    """Updates whose values lie on the quantisation grid of `_GRID` (k / 2^15):
    stochastic rounding leaves them unchanged, so a secure sum of them is
    exact to the last bit."""
    g = torch.Generator().manual_seed(5)
    return [
        ClientUpdate(
            client_id=i,
            delta=(torch.randint(-2000, 2000, (40,), generator=g).double() / 2**15).to(
                device
            ),
            num_examples=3 + i,
            metrics={},
        )
        for i in range(5)
    ]


# clip = 1 - 2^-15 makes the scale (2^15 - 1) / clip exactly 2^15.
_GRID = {"clip": 1 - 2**-15, "value_bits": 16}


def _spy_backend(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, str]]:
    """Record the ring back end and input device of every session."""
    seen: list[tuple[object, str]] = []
    real = secagg.run_session

    def spy(inputs: Any, *args: Any, **kwargs: Any) -> Any:
        devices = {str(x.device) for x in inputs.values()}
        seen.append((kwargs.get("backend"), ",".join(sorted(devices))))
        return real(inputs, *args, **kwargs)

    monkeypatch.setattr(secagg, "run_session", spy)
    return seen


@pytest.mark.parametrize(
    ("forced", "expected"),
    [(None, secagg.RingBackend.NUMPY), (secagg.RingBackend.TORCH,
                                        secagg.RingBackend.TORCH)],
    ids=["cpu-default-numpy", "forced-torch"],
)
def test_the_ring_backend_is_chosen_by_device_and_the_sum_is_exact(
    monkeypatch: pytest.MonkeyPatch,
    make_context: ContextFn,
    forced: secagg.RingBackend | None,
    expected: secagg.RingBackend,
) -> None:
    seen = _spy_backend(monkeypatch)
    updates = _grid_updates("cpu")
    agg = SecureAggregator(_settings(**_GRID), backend=forced)
    result = agg.aggregate(make_context(updates), updates)
    assert seen == [(expected, "cpu")]
    exact = torch.stack([u.num_examples * u.delta for u in updates]).sum(dim=0)
    assert agg.last_session is not None
    assert torch.equal(agg.last_session.weighted_sum.cpu(), exact)
    assert result.total_weight == sum(u.num_examples for u in updates)
    assert result.mean_delta.device.type == "cpu"


@pytest.mark.gpu
def test_a_cuda_model_masks_on_the_device_and_the_sum_is_exact(
    monkeypatch: pytest.MonkeyPatch, make_context: ContextFn
) -> None:
    seen = _spy_backend(monkeypatch)
    updates = _grid_updates("cuda")
    agg = SecureAggregator(_settings(**_GRID))
    result = agg.aggregate(make_context(updates), updates)
    # The inputs reached the session on the GPU, and the torch ring was used.
    assert seen == [(secagg.RingBackend.TORCH, "cuda:0")]
    exact = torch.stack([u.num_examples * u.delta for u in updates]).sum(dim=0)
    assert agg.last_session is not None
    assert torch.equal(agg.last_session.weighted_sum.to(exact.device), exact)
    assert result.mean_delta.device.type == "cuda"


def test_a_backend_that_is_not_a_ring_backend_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"SecureAggregator\.backend must be a secagg\.RingBackend "
        r"or None; found 'torch'"
    ):
        SecureAggregator(_settings(), backend="torch")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "poison",
    [{"bad_metric": {1: float("nan")}}, {"zero_weight": [1]}],
    ids=["nan-metric", "zero-examples"],
)
def test_a_federation_with_secure_sums_skips_a_bad_client_and_carries_on(
    poison: dict[str, Any],
) -> None:
    # Without the loop's client-side check, the NaN metric or the zero weight
    # would reach secagg, which refuses the whole session.
    kit = Kit()
    model = kit.model()
    fed = kit.federation(
        model=model,
        trainer=kit.PoisoningTrainer(kit.trainer(model), {}, **poison),
        aggregator=SecureAggregator(_settings()),
        rounds=2,
    )
    result = fed.run()
    assert result.rounds_completed == 2
    assert all(r.aborted is None and r.num_aggregated == 3 for r in result.history)
    assert all(list(r.skipped) == [1] for r in result.history)
