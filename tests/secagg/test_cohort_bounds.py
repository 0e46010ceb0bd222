"""Cohort bounds a client enforces, and exact sums under random dropout
schedules in every mode (complete graph and SecAgg+, semi-honest and
hardened), hardened SecAgg+ at 500 members included."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    ClientPolicy,
    ConsistencyError,
    GraphKind,
    PolicyViolation,
    QuantizedInput,
    Round,
    SecAggClient,
    SecAggConfig,
    SecurityMode,
    TooFewSurvivors,
    quantize_input,
    run_quantized_session,
)
from secagg.messages import ShareRelay
from secagg.signed_messages import SignedKeyDirectory
from secagg.threat import max_missing_neighbours, roster_graph
from tests.secagg.conftest import LENIENT, config, drive, quantized, refuses

HARD, SEMI = SecurityMode.HARDENED, SecurityMode.SEMI_HONEST
DROP_ROUNDS = [
    Round.ADVERTISE_KEYS,
    Round.SHARE_KEYS,
    Round.MASKED_INPUT,
    Round.CONSISTENCY_CHECK,
    Round.UNMASKING,
]


# Attack 10: the announced cohort has an upper bound ---------------------------


def test_a_client_refuses_cohorts_above_its_caps() -> None:
    # ShareKeys on the complete graph grows as n^2 at the server and n at
    # each client: a client refuses a 2000-member complete graph by default.
    big = config(n=2000, t=1900, d=4)
    with pytest.raises(
        PolicyViolation,
        match="cohort of 2000 with 2000 share holders per secret exceeds this "
        "client's maximum of 100000 clients and 1000 share holders",
    ):
        SecAggClient(big, 0)
    # The same cohort on SecAgg+ shares with 65 holders: accepted.
    sparse = SecAggConfig.for_cohort(
        num_clients=2000,
        vector_length=4,
        corrupt_fraction=0.0,
        dropout_fraction=0.1,
        max_weight=15,
    )
    assert sparse.graph is GraphKind.HARARY and sparse.group_size <= 1000
    SecAggClient(sparse, 0)
    small_cap = ClientPolicy(max_cohort=50)
    with pytest.raises(PolicyViolation, match="cohort of 60 with 60 share holders"):
        SecAggClient(config(n=60, t=40), 0, policy=small_cap)


# Exact sums under random dropout schedules ----------------------------------

MODES = {
    "complete-semi-honest": config(n=7, t=4, d=3),
    "complete-hardened": config(n=7, t=5, d=3, mode=HARD),
    "secaggplus-semi-honest": config(n=24, t=4, d=3, graph=GraphKind.HARARY, degree=8),
    "secaggplus-hardened": config(
        n=24, t=6, d=3, mode=HARD, graph=GraphKind.HARARY, degree=8
    ),
}


def _inputs(cfg: SecAggConfig) -> dict[int, QuantizedInput]:
    grid = np.arange(cfg.vector_length, dtype=np.float64) - 1
    return {
        i: quantize_input((grid + i % 5) / cfg.scale, 1 + i % 7, cfg)
        for i in range(cfg.num_clients)
    }


def _tolerated(cfg: SecAggConfig) -> int:
    """Dropouts no neighbourhood check or threshold can refuse."""
    slack = cfg.group_size - cfg.threshold
    if cfg.mode is HARD and cfg.graph is GraphKind.HARARY:
        slack = min(slack, max_missing_neighbours(degree=cfg.degree, corrupt=1))
    return slack


def _check(cfg: SecAggConfig, drop: dict[int, Round]) -> None:
    q = _inputs(cfg)
    res = run_quantized_session(q, cfg, drop=drop, policy=LENIENT)
    # Vanishing after MaskedInput leaves the input in the sum.
    gone = {i for i, r in drop.items() if r <= Round.MASKED_INPUT}
    survivors = set(q) - gone
    assert res.survivors == survivors
    modulus = 1 << cfg.ring_bits
    expect = [0] * cfg.encoded_length
    for i in survivors:
        expect = [a + int(b) for a, b in zip(expect, q[i].values, strict=True)]
    assert [int(v) for v in res.ring_sum] == [v % modulus for v in expect]
    assert res.total_weight == sum(1 + i % 7 for i in survivors)


@pytest.mark.parametrize("name", sorted(MODES))
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_exact_sums_under_tolerated_dropout_schedules(
    name: str, data: st.DataObject
) -> None:
    cfg = MODES[name]
    who = data.draw(
        st.lists(
            st.integers(0, cfg.num_clients - 1),
            unique=True,
            max_size=_tolerated(cfg),
        )
    )
    drop = {i: data.draw(st.sampled_from(DROP_ROUNDS)) for i in who}
    _check(cfg, drop)


@pytest.mark.parametrize("name", sorted(MODES))
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_any_dropout_schedule_gives_the_exact_sum_or_a_named_refusal(
    name: str, data: st.DataObject
) -> None:
    cfg = MODES[name]
    who = data.draw(st.lists(st.integers(0, cfg.num_clients - 1), unique=True))
    drop = {i: data.draw(st.sampled_from(DROP_ROUNDS)) for i in who}
    try:
        _check(cfg, drop)
    except (TooFewSurvivors, PolicyViolation, ConsistencyError):
        # Too few survivors, neighbours or signatures left: refused by name,
        # never a wrong sum.
        assert len(who) > _tolerated(cfg)


def test_hardened_secaggplus_at_500_members_with_dropouts() -> None:
    cfg = SecAggConfig.for_cohort(
        num_clients=500,
        vector_length=4,
        corrupt_fraction=0.0,
        dropout_fraction=0.1,
        max_weight=7,
        mode=HARD,
    )
    assert (cfg.graph, cfg.degree, cfg.threshold) == (GraphKind.HARARY, 32, 18)
    rng = random.Random(500)  # the dropout schedule only, never key material
    drop = {i: rng.choice(DROP_ROUNDS) for i in rng.sample(range(500), 25)}
    _check(cfg, drop)


def test_declared_dropouts_are_bounded_in_every_round_a_client_can_see() -> None:
    # Hardened SecAgg+, k = 8, one assumed colluder: D = 3.  The coordinator
    # hides four of the target's neighbours, first from the key directory,
    # then from the relayed shares.
    cfg = config(n=24, t=6, d=3, mode=HARD, graph=GraphKind.HARARY, degree=8)
    run = drive(cfg, Round.SHARE_KEYS)
    assert run.consortium is not None
    hidden = sorted(roster_graph(run.consortium.members, 8).neighbours(0))[:4]
    entries = SignedKeyDirectory.from_bytes(run.requests[0]).entries
    kept = tuple(e for e in entries if e.client_id not in hidden)
    target = run.clients[0]
    message = "4 of this client's 8 neighbours are missing; with 1 assumed colluders"
    refuses(
        target,
        lambda: target.share_keys(SignedKeyDirectory(entries=kept).to_bytes()),
        PolicyViolation,
        message,
    )
    relay_run = drive(cfg, Round.MASKED_INPUT)
    assert relay_run.consortium is not None
    graph = roster_graph(relay_run.consortium.members, 8)
    relay = ShareRelay.from_bytes(relay_run.requests[0])
    drop = set(sorted(graph.neighbours(0))[:4])
    thin = ShareRelay(
        receiver=0,
        ciphertexts=tuple(c for c in relay.ciphertexts if c[0] not in drop),
        commitments=tuple(c for c in relay.commitments if c[0] not in drop),
    ).to_bytes()
    target = relay_run.clients[0]
    refuses(
        target,
        lambda: target.masked_input(thin, quantized(cfg, 0)),
        PolicyViolation,
        message,
    )
