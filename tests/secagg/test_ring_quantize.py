"""Ring arithmetic and wire format on each back end, quantisation, and the
configuration checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    ConfigError,
    GraphKind,
    InvalidInput,
    InvalidMessage,
    RingBackend,
    Round,
    SecAggConfig,
    SecurityMode,
    quantize_input,
    run_session,
)
from secagg.backend import select_ring
from secagg.messages import MaskedInput
from secagg.quantize import dequantize
from secagg.ring import MAX_RING_BITS, MIN_RING_BITS, Ring, wire_width
from tests.secagg.conftest import BACKENDS, CPU, config


@settings(max_examples=40, deadline=None)
@given(
    bits=st.integers(MIN_RING_BITS, MAX_RING_BITS),
    backend=st.sampled_from(BACKENDS),
    data=st.data(),
)
def test_encode_decode_and_wire_round_trip(
    bits: int, backend: RingBackend, data: st.DataObject
) -> None:
    ring = select_ring(bits, CPU, backend)
    half = 1 << (bits - 1)
    vals = data.draw(st.lists(st.integers(-half, half - 1), min_size=1, max_size=20))
    enc = ring.from_signed(np.array(vals, dtype=np.int64))
    assert ring.centered(enc).tolist() == vals
    wire = ring.to_wire(enc)
    assert len(wire) == len(vals) * wire_width(bits)
    msg = MaskedInput(sender=0, bits=bits, length=len(vals), payload=bytes(wire))
    parsed = MaskedInput.from_bytes(msg.to_bytes())
    back = ring.from_wire(parsed.payload, parsed.length)
    assert ring.to_host(back).tolist() == ring.to_host(enc).tolist()


def test_sum_wraps_and_decodes_centred(backend: RingBackend) -> None:
    ring = select_ring(16, CPU, backend)
    a = ring.from_signed(np.array([2**15 - 1, -5], dtype=np.int64))
    b = ring.from_signed(np.array([1, -7], dtype=np.int64))
    assert ring.centered(ring.add(a, b)).tolist() == [-(2**15), -12]
    assert ring.centered(ring.sub(a, a)).tolist() == [0, 0]
    ring.add_(a, b)
    assert ring.centered(a).tolist() == [-(2**15), -12]


def test_wire_rejects_high_bits_and_bad_length() -> None:
    # k = 20 uses 3 bytes a coordinate; the top 4 bits must be zero.
    with pytest.raises(InvalidMessage, match="exceeds 2\\^bits"):
        MaskedInput(sender=0, bits=20, length=1, payload=b"\x00\x00\x10")
    with pytest.raises(InvalidMessage, match="wrong length"):
        MaskedInput(sender=0, bits=20, length=1, payload=b"\x00\x00")
    # k = 62 in 8 bytes: bit 63 (a negative int64 lane) is refused too.
    with pytest.raises(InvalidMessage, match="exceeds 2\\^bits"):
        MaskedInput(sender=0, bits=62, length=1, payload=bytes(7) + b"\x80")


def _cfg(**kw: Any) -> SecAggConfig:
    return config(d=6, **kw)


def test_bit_budget_refused_with_knobs_named() -> None:
    msg = (
        r"bit budget exceeded: value_bits \(16\) \+ bits of max_weight \(10\) \+ "
        r"ceil\(log2 num_clients\) \(9\) \+ 1 = 36 > ring_bits \(32\); raise "
        r"ring_bits \(at most 62\) or lower value_bits, max_weight or num_clients"
    )
    with pytest.raises(ConfigError, match=msg):
        SecAggConfig(num_clients=500, threshold=300, vector_length=10, max_weight=1000)
    # The same session fits once ring_bits is raised.
    SecAggConfig(
        num_clients=500, threshold=300, vector_length=10, max_weight=1000, ring_bits=36
    )


def test_clip_count_budget_refused() -> None:
    with pytest.raises(ConfigError, match="clipped coordinates cannot overflow"):
        SecAggConfig(
            num_clients=2,
            threshold=2,
            vector_length=2**20,
            ring_bits=20,
            value_bits=8,
            max_weight=1,
        )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"threshold": 5}, "threshold must be in"),
        ({"ring_bits": 63}, "ring_bits must be in"),
        ({"value_bits": 1}, "value_bits must be in"),
        ({"clip": float("nan")}, "clip must be a finite number"),
        ({"clip": -1.0}, "clip must be > 0"),
        ({"max_weight": 0}, "max_weight must be >= 1"),
        ({"mode": "hardened"}, "mode must be a SecurityMode"),
        ({"graph": GraphKind.HARARY}, "Harary graph needs an even degree >= 2"),
        ({"graph": GraphKind.HARARY, "degree": 3}, "even degree >= 2, got 3"),
        ({"degree": 4}, "degree is only set for GraphKind.HARARY"),
        (
            {"graph": GraphKind.HARARY, "degree": 2, "num_clients": 8, "threshold": 4},
            "threshold 4 exceeds the 3 share holders",
        ),
    ],
)
def test_config_validation(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _cfg(**kw)


def test_config_digest_binds_every_field() -> None:
    digests = {
        _cfg().digest(),
        _cfg(clip=2.0).digest(),
        _cfg(ring_bits=40).digest(),
        _cfg(max_weight=3).digest(),
        _cfg(context=b"model-hash").digest(),
        _cfg(threshold=2).digest(),
        _cfg(mode=SecurityMode.HARDENED).digest(),
        _cfg(graph=GraphKind.HARARY, degree=2).digest(),
    }
    assert len(digests) == 8


def test_clipping_is_counted_not_wrapped(ring32: Ring[Any]) -> None:
    cfg = _cfg(max_weight=7)
    x = torch.tensor([0.5, 3.0, -9.0, 1.0, -1.0, 0.0])
    q = quantize_input(x, 2, cfg, backend=ring32.backend)
    assert q.clipped == 2
    out = dequantize(ring32, q.values, cfg)
    assert out.clipped == 2 and out.total_weight == 2
    # Clipped values saturate at ±clip; they never wrap around.
    assert out.weighted_sum[1] == pytest.approx(2.0)
    assert out.weighted_sum[2] == pytest.approx(-2.0)


def test_weight_at_max_weight_is_kept(backend: RingBackend) -> None:
    q = quantize_input(np.zeros(6), 15, _cfg(max_weight=15), backend=backend)
    assert q.weight == 15 and int(q.values[6]) == 15


def test_weight_above_max_weight_is_refused_not_capped(backend: RingBackend) -> None:
    # A silent cap would turn a count-weighted FedAvg into another mean.
    with pytest.raises(
        InvalidInput, match=r"^weight 16 exceeds max_weight 15; raise max_weight"
    ):
        quantize_input(torch.zeros(6), 16, _cfg(max_weight=15), backend=backend)


def test_run_session_refuses_an_over_cap_weight_of_a_dropped_client() -> None:
    cfg = _cfg(max_weight=15)
    with pytest.raises(InvalidInput, match="weight 99 exceeds max_weight 15"):
        run_session(
            [torch.zeros(6)] * 4, [1, 1, 1, 99], cfg, drop={3: Round.SHARE_KEYS}
        )


@pytest.mark.parametrize(
    ("vector", "weight", "message"),
    [
        (np.zeros(5), 1, "vector must be 1-D of length 6"),
        (np.array([0, 0, 0, 0, 0, np.nan]), 1, "NaN or infinite"),
        (np.zeros(6, dtype=np.int64), 1, "must be floating point"),
        (np.zeros(6), 0, "weight must be >= 1"),
        (np.zeros(6), True, "weight must be an int"),
    ],
)
def test_quantize_rejects_bad_input(
    vector: object, weight: object, message: str, backend: RingBackend
) -> None:
    with pytest.raises(InvalidInput, match=message):
        quantize_input(vector, weight, _cfg(), backend=backend)  # type: ignore[arg-type]


def test_stochastic_rounding_is_unbiased_and_within_one_step() -> None:
    cfg = SecAggConfig(
        num_clients=2,
        threshold=2,
        vector_length=200_000,
        value_bits=4,
        clip=1.0,
        max_weight=1,
    )
    # scale = 7: 0.3 · 7 = 2.1 rounds to 2 or 3, up with probability 0.1.
    x = np.full(cfg.vector_length, 0.3)
    ring = select_ring(cfg.ring_bits)
    q = dequantize(ring, quantize_input(x, 1, cfg).values, cfg).weighted_sum
    steps = (q * cfg.scale).numpy()
    assert set(np.unique(steps).tolist()) == {2.0, 3.0}
    ups = int(np.count_nonzero(steps == 3.0))
    n, p = cfg.vector_length, 0.1
    sigma = (n * p * (1 - p)) ** 0.5
    # Two-sided, 6 sigma: a correct rounder fails about once in 10^9 runs.
    assert abs(ups - n * p) < 6 * sigma, f"{ups} round-ups, expected {n * p}"
