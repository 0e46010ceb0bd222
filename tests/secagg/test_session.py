"""Whole sessions: secure sum equals plain sum for any dropout pattern."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg import (
    CheatingError,
    ProtocolError,
    Round,
    SecAggConfig,
    SecAggServer,
    TooFewSurvivors,
    quantize_input,
    run_quantized_session,
    run_session,
    shamir,
)
from secagg.messages import MaskedInput, UnmaskResponse
from secagg.ring_numpy import NumpyRing
from tests.secagg.conftest import LENIENT, Drive, config, drive

DROP_CHOICES = [None, *Round]


def _sends_input(drop: Round | None) -> bool:
    return drop is None or drop > Round.MASKED_INPUT


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_secure_sum_equals_plain_sum(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 20), label="n")
    t = data.draw(st.integers(1, n), label="t")
    d = data.draw(st.integers(1, 12), label="d")
    bits = data.draw(st.sampled_from([24, 32, 45, 62]), label="bits")
    clip = data.draw(st.sampled_from([0.5, 1.0, 4.0]), label="clip")
    cfg = SecAggConfig(
        num_clients=n,
        threshold=t,
        vector_length=d,
        ring_bits=bits,
        value_bits=12,
        max_weight=15,
        clip=clip,
    )
    floats = st.floats(-2 * clip, 2 * clip, allow_nan=False, width=64)
    xs = {
        i: np.array(data.draw(st.lists(floats, min_size=d, max_size=d)))
        for i in range(n)
    }
    ws = {i: data.draw(st.integers(1, cfg.max_weight)) for i in range(n)}
    drop = {
        i: r
        for i in range(n)
        if (r := data.draw(st.sampled_from(DROP_CHOICES), label=f"drop{i}")) is not None
    }
    q = {i: quantize_input(xs[i], ws[i], cfg) for i in range(n)}
    answering = [i for i in range(n) if i not in drop]
    if len(answering) < t:
        with pytest.raises(TooFewSurvivors, match=f"threshold is {t}"):
            run_quantized_session(q, cfg, drop=drop, policy=LENIENT)
        return
    res = run_quantized_session(q, cfg, drop=drop, policy=LENIENT)
    survivors = {i for i in range(n) if _sends_input(drop.get(i))}
    assert res.survivors == survivors
    assert res.responders == set(answering)
    # Exact in the ring: the unmasked sum is the sum of the quantised vectors.
    ring = NumpyRing(bits)
    expect_ring = ring.zeros(cfg.encoded_length)
    for i in survivors:
        expect_ring = ring.add(expect_ring, ring.adopt(q[i].values))
    assert res.ring_sum.tolist() == expect_ring.tolist()
    # Within the quantisation bound of the plain weighted sum of clipped inputs.
    w_eff = {i: ws[i] for i in survivors}
    plain = sum(w_eff[i] * np.clip(xs[i], -clip, clip) for i in survivors)
    bound = sum(w_eff.values()) / cfg.scale
    err = float(np.max(np.abs(res.weighted_sum.numpy() - plain)))
    assert err <= bound + 1e-9, (
        f"|secure - plain| = {err:.3g} exceeds the stochastic-rounding bound "
        f"Σw/scale = {bound:.3g} (each client is off by < one step w/scale)"
    )
    assert res.total_weight == sum(w_eff.values())
    clipped = sum(int(np.count_nonzero(np.abs(xs[i]) > clip)) for i in survivors)
    assert res.clipped == clipped


def test_twenty_clients_five_dropped_before_unmasking_exact() -> None:
    n, d = 20, 64
    cfg = SecAggConfig(
        num_clients=n, threshold=11, vector_length=d, max_weight=100, value_bits=16
    )
    # Inputs on the quantisation grid round exactly, so the sum is exact.
    grid = np.arange(-d // 2, d // 2, dtype=np.float64)
    inputs = [torch.from_numpy((grid + 3 * i) / cfg.scale) for i in range(n)]
    weights = [i + 1 for i in range(n)]
    drop = dict.fromkeys(range(15, 20), Round.UNMASKING)
    res = run_session(inputs, weights, cfg, drop=drop)
    exact = torch.stack([w * x for w, x in zip(weights, inputs, strict=True)]).sum(0)
    assert isinstance(res.weighted_sum, torch.Tensor)
    assert torch.allclose(res.weighted_sum, exact, rtol=0, atol=1e-12)
    assert res.total_weight == sum(weights)
    assert torch.allclose(res.mean, exact / sum(weights), rtol=0, atol=1e-12)
    # The five that vanished had sent their masked input: they are in the sum.
    assert res.survivors == frozenset(range(n))
    assert res.responders == frozenset(range(15))
    assert res.bytes_sent[19] > 0 and res.clipped == 0


def test_drops_at_every_round_recover_survivors_sum() -> None:
    n, d = 12, 5
    cfg = SecAggConfig(num_clients=n, threshold=6, vector_length=d, max_weight=9)
    inputs = {i: torch.full((d,), 0.25 * (i % 3)) for i in range(n)}
    weights = dict.fromkeys(range(n), 2)
    drop = {
        0: Round.ADVERTISE_KEYS,
        1: Round.SHARE_KEYS,
        2: Round.MASKED_INPUT,
        3: Round.CONSISTENCY_CHECK,
        4: Round.UNMASKING,
    }
    res = run_session(inputs, weights, cfg, drop=drop)
    survivors = set(range(3, n))
    assert res.survivors == survivors
    exact = torch.stack([2 * inputs[i].double() for i in survivors]).sum(0)
    assert torch.allclose(res.weighted_sum, exact, atol=len(survivors) * 2 / cfg.scale)
    assert res.bytes_sent[0] == 0 and res.bytes_received[0] == 0
    assert res.bytes_received[4] > 0


def test_too_few_survivors_aborts_with_named_error() -> None:
    cfg = SecAggConfig(num_clients=5, threshold=4, vector_length=3, max_weight=1)
    inputs = [torch.zeros(3)] * 5
    drop = {0: Round.MASKED_INPUT, 1: Round.MASKED_INPUT}
    with pytest.raises(TooFewSurvivors, match="only 3 clients sent masked inputs"):
        run_session(inputs, [1] * 5, cfg, drop=drop)


def test_extra_scalars_ride_in_the_same_vector() -> None:
    # A loss sum appended to the update is summed securely like any coordinate.
    cfg = SecAggConfig(num_clients=3, threshold=2, vector_length=4, max_weight=7)
    updates = [torch.tensor([0.1, -0.2, 0.3]) for _ in range(3)]
    losses = [0.5, 0.25, 0.75]
    inputs = [
        torch.cat([u, torch.tensor([l])]) for u, l in zip(updates, losses, strict=True)
    ]
    res = run_session(inputs, [1, 2, 3], cfg)
    expect = sum(w * l for w, l in zip([1, 2, 3], losses, strict=True))
    assert float(res.weighted_sum[-1]) == pytest.approx(expect, abs=6 / cfg.scale)


def test_upload_is_within_five_percent_of_float32() -> None:
    d = 1_000_000
    run = drive(config(n=3, t=2, d=d), Round.MASKED_INPUT)
    q = quantize_input(np.zeros(d), 1, run.cfg)
    upload = run.clients[0].masked_input(run.requests[0], q)
    assert len(upload) == 11 + 4 * (d + 2)
    assert len(upload) <= 1.05 * 4 * d


def test_no_global_rng_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a non-cryptographic generator was used")

    for mod, names in (
        (torch, ["rand", "randn", "randint", "randperm", "bernoulli", "manual_seed"]),
        (np.random, ["rand", "randint", "random", "default_rng", "RandomState"]),
        (random, ["random", "randint", "getrandbits", "randbytes", "seed"]),
    ):
        for name in names:
            monkeypatch.setattr(mod, name, forbidden)
    cfg = SecAggConfig(num_clients=4, threshold=3, vector_length=6, max_weight=3)
    xs = [torch.linspace(-1, 1, 6)] * 4
    res = run_session(xs, [1, 2, 3, 3], cfg, drop={1: Round.MASKED_INPUT})
    assert res.total_weight == 7


def test_server_rejects_out_of_order_and_forged_messages() -> None:
    run = drive(config(n=4, t=3, d=4), Round.MASKED_INPUT)
    srv, clients = run.server, run.clients
    msg = clients[0].masked_input(
        run.requests[0], quantize_input(np.zeros(4), 1, run.cfg)
    )
    with pytest.raises(ProtocolError, match="claims to come from 0"):
        srv.receive(1, msg)
    srv.receive(0, msg)
    with pytest.raises(ProtocolError, match="duplicate message from client 0"):
        srv.receive(0, msg)
    short = MaskedInput(sender=2, bits=32, length=3, payload=bytes(12)).to_bytes()
    with pytest.raises(ProtocolError, match="does not match the configuration"):
        srv.receive(2, short)
    with pytest.raises(ProtocolError, match="only valid after the Unmasking round"):
        srv.unmask()
    fresh = SecAggServer(run.cfg)
    with pytest.raises(TooFewSurvivors, match="only 0 clients advertised keys"):
        fresh.broadcast()
    assert fresh.round is None
    with pytest.raises(ProtocolError, match="the session is over"):
        fresh.receive(0, msg)


def _unmask_run() -> tuple[Drive, dict[int, UnmaskResponse]]:
    run = drive(config(n=5, t=3, d=4), Round.UNMASKING, absent={4: Round.MASKED_INPUT})
    responses = {
        i: UnmaskResponse.from_bytes(run.clients[i].unmask(msg))
        for i, msg in run.requests.items()
    }
    return run, responses


def test_server_refuses_shares_a_client_may_not_reveal() -> None:
    run, responses = _unmask_run()
    r0 = responses[0]
    # Client 0 also "reveals" a seed share of dropped client 4.
    bad = UnmaskResponse(
        sender=0,
        seed_shares=(*r0.seed_shares, (4, r0.key_shares[0][1])),
        key_shares=(),
    )
    with pytest.raises(ProtocolError, match="shares for clients it may not reveal"):
        run.server.receive(0, bad.to_bytes())


def test_server_convicts_a_corrupted_key_share_and_decodes_around_it() -> None:
    run, responses = _unmask_run()
    r0 = responses[0]
    owner, share = r0.key_shares[0]
    bad = UnmaskResponse(
        sender=0,
        seed_shares=r0.seed_shares,
        key_shares=((owner, (share + 1) % shamir.PRIME),),
    )
    with pytest.raises(CheatingError, match="client 0 revealed shares of clients"):
        run.server.receive(0, bad.to_bytes())
    for i in (1, 2, 3):
        run.server.receive(i, responses[i].to_bytes())
    agg = run.server.unmask()
    assert agg.cheaters == {0} and agg.responders == {1, 2, 3}
    assert agg.total_weight == sum(1 + i for i in range(4))
