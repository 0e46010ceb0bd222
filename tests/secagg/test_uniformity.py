"""A masked vector is indistinguishable from uniform over the ring.

Chi-square on the byte histogram of a real MaskedInput payload (accept), and
on two deliberately biased generators (must reject).  Threshold p = 1e-6 on
both sides: a correct implementation fails one run in a million.
"""

from __future__ import annotations

import os

import numpy as np
from scipy.stats import chisquare

from secagg import Round, quantize_input
from secagg.messages import MaskedInput, ShareRelay
from secagg.prg import chacha20_keystream
from tests.secagg.conftest import config, drive

ALPHA = 1e-6
D = 250_000  # 1 MB of masked payload at k = 32


def _p_value(data: bytes) -> float:
    counts = np.bincount(np.frombuffer(data, np.uint8), minlength=256)
    return float(chisquare(counts).pvalue)


def _masked_payload() -> bytes:
    cfg = config(n=3, t=2, d=D)
    run = drive(cfg, Round.MASKED_INPUT)
    relay = run.requests[0]
    assert ShareRelay.from_bytes(relay).receiver == 0
    # A constant input is the worst case for hiding: every byte is the same.
    q = quantize_input(np.full(D, 0.25), 3, cfg)
    msg = MaskedInput.from_bytes(run.clients[0].masked_input(relay, q))
    return bytes(msg.payload)


def test_masked_vector_is_uniform() -> None:
    p = _p_value(_masked_payload())
    assert p > ALPHA, f"masked bytes rejected as non-uniform: p = {p:.3g}"


def test_biased_generator_is_rejected() -> None:
    # One byte in a hundred forced to zero.
    data = bytearray(chacha20_keystream(os.urandom(32), 4 * D))
    data[::100] = bytes(len(data[::100]))
    p = _p_value(bytes(data))
    assert p < ALPHA, f"biased generator not detected: p = {p:.3g}"


def test_off_by_one_generator_is_rejected() -> None:
    # Flower's randint(0, M - 1) never emits M - 1: here byte 255 never occurs.
    raw = np.frombuffer(chacha20_keystream(os.urandom(32), 4 * D), np.uint8)
    biased = np.where(raw == 255, raw ^ 0x80, raw).astype(np.uint8)
    p = _p_value(biased.tobytes())
    assert p < ALPHA, f"off-by-one generator not detected: p = {p:.3g}"
