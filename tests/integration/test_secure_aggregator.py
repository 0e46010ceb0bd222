"""The secure aggregator against the plain one, and its failure paths."""

from __future__ import annotations

import pytest
import torch

import secagg
from core.aggregation import PlainAggregator
from core.errors import ConfigError, RoundAborted
from core.interfaces import ClientUpdate, RoundContext
from core.secure_aggregator import SecureAggregationConfig, SecureAggregator


def _updates(n: int, dim: int = 40, seed: int = 0) -> list[ClientUpdate]:
    g = torch.Generator().manual_seed(seed)
    return [
        ClientUpdate(
            client_id=3 + 7 * i,
            delta=torch.randn(dim, generator=g) * 0.2,
            num_examples=5 + 11 * i,
            metrics={"train_loss": 0.3 + 0.1 * i, "train_accuracy": 0.9 - 0.05 * i},
        )
        for i in range(n)
    ]


def _context(updates: list[ClientUpdate], round_index: int = 1) -> RoundContext:
    return RoundContext(
        round_index=round_index,
        cohort=tuple(u.client_id for u in updates),
        global_params=torch.zeros(updates[0].delta.numel()),
    )


def test_secure_mean_equals_plain_mean_within_quantisation_error() -> None:
    updates = _updates(6)
    cfg = SecureAggregationConfig(clip=1.0, value_bits=16)
    secure = SecureAggregator(cfg).aggregate(_context(updates), updates)
    plain = PlainAggregator().aggregate(_context(updates), updates)
    # Each coordinate is rounded to a step of clip / (2^15 - 1); a weighted
    # mean of stochastically rounded values is off by less than one step.
    step = cfg.clip / (2 ** (cfg.value_bits - 1) - 1)
    err = float((secure.mean_delta - plain.mean_delta).abs().max())
    assert err < step, f"max error {err} exceeds one quantisation step {step}"
    assert secure.total_weight == plain.total_weight
    for key, value in plain.metrics.items():
        assert secure.metrics[key] == pytest.approx(value, abs=cfg.metric_bound * step)
    assert secure.metrics["clipped_coordinates"] == 0
    assert secure.dropped == ()
    assert secure.num_aggregated == 6


def test_clipped_coordinates_are_counted_not_wrapped() -> None:
    updates = _updates(3)
    big = ClientUpdate(
        client_id=99,
        delta=torch.full((40,), 5.0),
        num_examples=1,
        metrics=dict(updates[0].metrics),
    )
    result = SecureAggregator(SecureAggregationConfig(clip=1.0)).aggregate(
        _context([*updates, big]), [*updates, big]
    )
    assert result.metrics["clipped_coordinates"] == 40
    assert bool((result.mean_delta.abs() <= 1.0 + 1e-6).all())


def test_one_client_is_refused() -> None:
    updates = _updates(1)
    with pytest.raises(RoundAborted, match="at least 2 clients"):
        SecureAggregator().aggregate(_context(updates), updates)


def test_too_many_dropouts_abort_the_round() -> None:
    updates = _updates(6)
    agg = SecureAggregator(SecureAggregationConfig(dropout_rate=0.99, seed=3))
    with pytest.raises(RoundAborted, match="secure aggregation aborted"):
        agg.aggregate(_context(updates), updates)


def test_survivors_are_aggregated_exactly_when_some_drop() -> None:
    updates = _updates(10, seed=4)
    # The first seed whose simulated schedule loses at least one input (a
    # client vanishing before Unmasking still counts: its input arrived).
    for seed in range(50):
        cfg = SecureAggregationConfig(
            dropout_rate=0.3, dropout_tolerance=0.5, seed=seed
        )
        result = SecureAggregator(cfg).aggregate(_context(updates), updates)
        if result.dropped:
            break
    assert result.dropped, "no seed in 50 dropped a client at rate 0.3"
    kept = [u for u in updates if u.client_id not in result.dropped]
    assert result.num_aggregated == len(kept)
    plain = PlainAggregator().aggregate(_context(kept), kept)
    step = cfg.clip / (2 ** (cfg.value_bits - 1) - 1)
    assert float((result.mean_delta - plain.mean_delta).abs().max()) < step
    assert result.total_weight == plain.total_weight


def test_metric_schema_must_match() -> None:
    updates = _updates(3)
    odd = ClientUpdate(client_id=1, delta=torch.zeros(40), num_examples=2, metrics={})
    with pytest.raises(RoundAborted, match="different metric names"):
        SecureAggregator().aggregate(_context([*updates, odd]), [*updates, odd])


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match="dropout_tolerance"):
        SecureAggregationConfig(dropout_tolerance=0.7)
    with pytest.raises(ConfigError, match="mode"):
        SecureAggregationConfig(mode="paranoid")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dropout_rate"):
        SecureAggregationConfig(dropout_rate=1.0)


def test_bit_budget_overflow_aborts_with_the_knob_to_turn() -> None:
    updates = _updates(3)
    agg = SecureAggregator(SecureAggregationConfig(value_bits=24, max_weight=2**10))
    with pytest.raises(RoundAborted, match="bit budget"):
        agg.aggregate(_context(updates), updates)


def test_hardened_mode_recovers_the_mean_with_signed_identities() -> None:
    updates = _updates(6, seed=2)
    cfg = SecureAggregationConfig(
        mode=secagg.SecurityMode.HARDENED, corrupt_fraction=0.1, dropout_tolerance=0.2
    )
    agg = SecureAggregator(cfg)
    first = agg.aggregate(_context(updates), updates)
    plain = PlainAggregator().aggregate(_context(updates), updates)
    step = cfg.clip / (2 ** (cfg.value_bits - 1) - 1)
    assert float((first.mean_delta - plain.mean_delta).abs().max()) < step
    # Identities are long-term: the same keys sign the next round's session.
    keys = dict(agg._identity_keys)
    agg.aggregate(_context(updates, round_index=2), updates)
    assert agg._identity_keys == keys


def test_hardened_threshold_that_cannot_exceed_corrupt_majority_is_refused() -> None:
    updates = _updates(4)
    cfg = SecureAggregationConfig(
        mode=secagg.SecurityMode.HARDENED, corrupt_fraction=0.45, dropout_tolerance=0.5
    )
    with pytest.raises(RoundAborted, match="refused its config"):
        SecureAggregator(cfg).aggregate(_context(updates), updates)
