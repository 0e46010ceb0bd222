"""ChaCha20 in torch ops: RFC 8439 vectors, bit-exactness vs pyca, mask sums."""

from __future__ import annotations

import struct

import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg import MAX_RING_BITS, InvalidInput
from secagg.prg_torch import (
    _quarter_rounds,
    chacha20_words,
    ring_mask,
    signed_mask_sum,
)
from tests.secagg.conftest import RFC8439_A1

CPU = torch.device("cpu")
RING_BITS = [8, 16, 32, 40, 62]


def pyca_words(
    key: bytes, n: int, counter: int = 0, nonce: bytes = bytes(12)
) -> list[int]:
    """Reference keystream: pyca's ChaCha20 encrypting zeros."""
    iv = counter.to_bytes(4, "little") + nonce
    enc = Cipher(algorithms.ChaCha20(key, iv), mode=None).encryptor()
    return list(struct.unpack(f"<{n}I", enc.update(bytes(4 * n))))


def oracle_ring(key: bytes, length: int, bits: int) -> list[int]:
    mask = (1 << bits) - 1
    if bits <= 32:
        return [w & mask for w in pyca_words(key, length)]
    w = pyca_words(key, 2 * length)
    return [(w[2 * i] | w[2 * i + 1] << 32) & mask for i in range(length)]


def as_bytes(words: torch.Tensor) -> bytes:
    return struct.pack(f"<{words.numel()}I", *words.tolist())


def test_quarter_round_rfc8439_2_1_1():
    t = [
        torch.tensor([[v]], dtype=torch.int64)
        for v in (0x11111111, 0x01020304, 0x9B8D6F43, 0x01234567)
    ]
    _quarter_rounds(*t)
    assert [int(x) for x in t] == [0xEA2A92F4, 0xCB1CF8CE, 0x4581472E, 0x5881C4BB]


def test_block_rfc8439_2_3_2():
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a00000000")
    got = as_bytes(chacha20_words(key, 16, device=CPU, counter=1, nonce=nonce))
    assert got.hex() == (
        "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
        "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
    )


def test_encryption_rfc8439_2_4_2():
    key = bytes(range(32))
    nonce = bytes.fromhex("000000000000004a00000000")
    plain = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one "
        b"tip for the future, sunscreen would be it."
    )
    stream = as_bytes(chacha20_words(key, 32, device=CPU, counter=1, nonce=nonce))
    cipher = bytes(p ^ s for p, s in zip(plain, stream, strict=False))
    assert len(plain) == 114
    assert cipher[:16].hex() == "6e2e359a2568f98041ba0728dd0d6981"
    assert cipher[-2:].hex() == "874d"


@pytest.mark.parametrize(("key", "nonce", "counter", "first16"), RFC8439_A1)
def test_block_rfc8439_appendix_a1(key, nonce, counter, first16):
    words = chacha20_words(key, 16, device=CPU, counter=counter, nonce=nonce)
    assert as_bytes(words)[:16].hex() == first16


def test_appendix_a1_vector_1_full_block():
    words = chacha20_words(bytes(32), 16, device="cpu")
    assert as_bytes(words).hex() == (
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=12, max_size=12),
    counter=st.one_of(st.integers(0, 1000), st.integers(2**32 - 10, 2**32 - 5)),
    n=st.integers(0, 70),
)
def test_keystream_matches_pyca(key, nonce, counter, n):
    got = chacha20_words(key, n, device=CPU, counter=counter, nonce=nonce)
    assert got.dtype == torch.int64 and got.shape == (n,)
    assert got.tolist() == pyca_words(key, n, counter, nonce)


@settings(max_examples=15, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    length=st.integers(0, 40),
    bits=st.sampled_from(RING_BITS),
)
def test_ring_mask_matches_pyca(key, length, bits):
    got = ring_mask(key, length, bits, device=CPU)
    assert got.dtype == torch.int64 and got.shape == (length,)
    assert got.tolist() == oracle_ring(key, length, bits)


def slow_mask_sum(
    keys: list[bytes], signs: list[int], length: int, bits: int
) -> list[int]:
    acc = [0] * length
    for key, sign in zip(keys, signs, strict=True):
        for i, v in enumerate(oracle_ring(key, length, bits)):
            acc[i] = (acc[i] + sign * v) % (1 << bits)
    return acc


@settings(max_examples=12, deadline=None)
@given(
    keys=st.lists(st.binary(min_size=32, max_size=32), min_size=0, max_size=5),
    data=st.data(),
    length=st.integers(0, 50),
    bits=st.sampled_from(RING_BITS),
    chunk=st.sampled_from([None, 16, 32, 48, 100]),
)
def test_signed_mask_sum_matches_oracle(keys, data, length, bits, chunk):
    signs = data.draw(
        st.lists(st.sampled_from([1, -1]), min_size=len(keys), max_size=len(keys))
    )
    got = signed_mask_sum(keys, signs, length, bits, CPU, chunk_elems=chunk)
    assert got.tolist() == slow_mask_sum(keys, signs, length, bits)


@pytest.mark.parametrize("bits", RING_BITS)
def test_pair_masks_cancel(bits):
    # u adds +PRG(s_uv) and v adds -PRG(s_uv): the sum of both is zero.
    keys = [bytes([i]) * 32 for i in range(4)]
    u = signed_mask_sum(keys, [1, 1, -1, -1], 33, bits, CPU)
    v = signed_mask_sum(keys, [-1, -1, 1, 1], 33, bits, CPU)
    assert torch.equal((u + v) & ((1 << bits) - 1), torch.zeros(33, dtype=torch.int64))
    assert int(u.max()) < 2**bits and int(u.min()) >= 0


def test_out_is_overwritten_and_returned():
    keys = [b"\x05" * 32, b"\x06" * 32]
    out = torch.full((20,), 12345, dtype=torch.int64)
    got = signed_mask_sum(keys, [1, -1], 20, 32, "cpu", out=out)
    assert got is out
    assert out.tolist() == slow_mask_sum(keys, [1, -1], 20, 32)


def test_many_keys_batched_across_chunks():
    keys = [bytes([i]) * 32 for i in range(9)]
    signs = [1, -1] * 4 + [1]
    expect = slow_mask_sum(keys, signs, 40, 40)
    for chunk in (16, 64, 200, 1 << 20):
        got = signed_mask_sum(keys, signs, 40, 40, CPU, chunk_elems=chunk)
        assert got.tolist() == expect


def test_empty_inputs():
    assert signed_mask_sum([], [], 7, 16, CPU).tolist() == [0] * 7
    assert signed_mask_sum([b"k" * 32], [1], 0, 16, CPU).shape == (0,)
    assert chacha20_words(bytes(32), 0, device=CPU).shape == (0,)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: chacha20_words(b"short", 4, device=CPU), "key must be 32 bytes"),
        (
            lambda: chacha20_words(bytes(32), 4, device=CPU, nonce=bytes(8)),
            r"nonce must be 12 bytes",
        ),
        (
            lambda: chacha20_words(bytes(32), -1, device=CPU),
            "n_words must be an int >= 0",
        ),
        (lambda: chacha20_words(bytes(32), 4.0, device=CPU), "n_words must be an int"),  # type: ignore[arg-type]
        (
            lambda: chacha20_words(bytes(32), 17, device=CPU, counter=2**32 - 1),
            "block counter would overflow",
        ),
        (lambda: chacha20_words(bytes(32), 4, device="nowhere"), "unknown device"),
        (
            lambda: ring_mask(bytes(32), 4, 0, device=CPU),
            r"ring bits must be in \[1, 62\]",
        ),
        (
            lambda: ring_mask(bytes(32), 4, MAX_RING_BITS + 1, device=CPU),
            r"ring bits must be in \[1, 62\], got 63",
        ),
        (lambda: ring_mask(bytes(32), 4, "8", device=CPU), "ring bits must be an int"),  # type: ignore[arg-type]
        (lambda: signed_mask_sum([bytes(32)], [1, 1], 4, 8, CPU), "1 keys but 2 signs"),
        (lambda: signed_mask_sum([bytes(32)], [2], 4, 8, CPU), "every sign must be"),
        (lambda: signed_mask_sum([bytes(32)], [True], 4, 8, CPU), "every sign must be"),
        (lambda: signed_mask_sum([bytes(31)], [1], 4, 8, CPU), "key must be 32 bytes"),
        (lambda: signed_mask_sum([bytes(32)], [1], -4, 8, CPU), "length must be"),
        (
            lambda: signed_mask_sum([bytes(32)], [1], 4, 8, CPU, chunk_elems=8),
            "chunk_elems must be >= 16",
        ),
        (
            lambda: signed_mask_sum(
                [bytes(32)], [1], 4, 8, CPU, out=torch.empty(5, dtype=torch.int64)
            ),
            "out must be a contiguous int64 tensor",
        ),
        (
            lambda: signed_mask_sum(
                [bytes(32)], [1], 4, 8, CPU, out=torch.empty(4, dtype=torch.int32)
            ),
            "out must be a contiguous int64 tensor",
        ),
        (
            lambda: signed_mask_sum(
                [bytes(32)], [1], 4, 8, CPU, out=torch.empty(8, dtype=torch.int64)[::2]
            ),
            "out must be a contiguous int64 tensor",
        ),
    ],
)
def test_invalid_arguments_raise_invalid_input(call, message):
    with pytest.raises(InvalidInput, match=message):
        call()


def test_importing_secagg_prg_does_not_import_triton():
    import subprocess
    import sys

    code = (
        "import sys, secagg.prg_torch, secagg.graph; "
        "assert 'triton' not in sys.modules, 'triton imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
