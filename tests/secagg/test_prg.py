"""Host ChaCha20 PRG: RFC 8439 known answers through our API, mask layout."""

from __future__ import annotations

import os

import numpy as np
import pytest

from secagg import InvalidInput, prg
from secagg.ring import container_dtype
from tests.secagg.conftest import RFC8439_A1

KEY_00_1F = bytes(range(32))


def test_rfc8439_2_3_2_block() -> None:
    nonce = bytes.fromhex("000000090000004a00000000")
    out = prg.chacha20_keystream(KEY_00_1F, 64, nonce=nonce, counter=1)
    assert out.hex() == (
        "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
        "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
    )


def test_rfc8439_2_4_2_encryption() -> None:
    plaintext = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you "
        b"only one tip for the future, sunscreen would be it."
    )
    assert len(plaintext) == 114
    nonce = bytes.fromhex("000000000000004a00000000")
    ks = prg.chacha20_keystream(KEY_00_1F, len(plaintext), nonce=nonce, counter=1)
    ct = bytes(a ^ b for a, b in zip(plaintext, ks, strict=True))
    assert ct[:16].hex() == "6e2e359a2568f98041ba0728dd0d6981"
    assert ct[-2:].hex() == "874d"


@pytest.mark.parametrize(("key", "nonce", "counter", "first16"), RFC8439_A1)
def test_rfc8439_appendix_a1(
    key: bytes, nonce: bytes, counter: int, first16: str
) -> None:
    out = prg.chacha20_keystream(key, 64, nonce=nonce, counter=counter)
    assert out[:16].hex() == first16


def test_mask_layout_k32_is_rfc_a1_vector_1_words() -> None:
    # Our mask layout is nonce 0, counter 0: exactly RFC 8439 A.1 #1.
    words = np.frombuffer(bytes.fromhex("76b8e0ada0f13d90405d6ae55386bd28"), "<u4")
    assert prg.mask_vector(bytes(32), 4, 32).tolist() == words.tolist()


@pytest.mark.parametrize("bits", [8, 20, 31, 33, 48, 62])
def test_mask_layout_other_widths(bits: int) -> None:
    key = os.urandom(32)
    n = 1000
    raw = prg.chacha20_keystream(key, 8 * n)
    words = np.frombuffer(raw, "<u4").astype(np.uint64)
    mask = (1 << bits) - 1
    if bits <= 32:
        expect = words[:n] & np.uint64(mask)
    else:
        expect = (words[0::2] | (words[1::2] << np.uint64(32))) & np.uint64(mask)
    got = prg.mask_vector(key, n, bits)
    assert got.dtype == container_dtype(bits)
    assert got.astype(np.uint64).tolist() == expect.tolist()


def test_signed_sum_across_block_boundaries() -> None:
    # 70_001 uint32 words cross the 64 Ki-word block boundary mid-stream.
    keys = [os.urandom(32) for _ in range(3)]
    signs = [1, -1, 1]
    n = 70_001
    got = prg.signed_mask_sum_into(np.zeros(n, np.uint32), keys, signs, 32)
    parts = [np.frombuffer(prg.chacha20_keystream(k, 4 * n), "<u4") for k in keys]
    expect = (parts[0].astype(np.int64) - parts[1].astype(np.int64) + parts[2]) % 2**32
    assert got.tolist() == expect.tolist()


def test_keystream_reader_continues_the_stream() -> None:
    key = os.urandom(32)
    ks = prg.Keystream(key)
    a = ks.words(5).copy()
    b = ks.words(7).copy()
    expect = np.frombuffer(prg.chacha20_keystream(key, 48), "<u4")
    assert np.concatenate([a, b]).tolist() == expect.tolist()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: prg.signed_mask_sum_into(
                np.zeros(4, np.uint32), [bytes(32)], [2], 32
            ),
            r"^every sign must be \+1 or -1$",
        ),
        (
            lambda: prg.signed_mask_sum_into(
                np.zeros(4, np.uint32), [bytes(32)], [], 32
            ),
            r"^1 keys but 0 signs$",
        ),
        (
            lambda: prg.mask_vector(b"short", 4, 32),
            r"^a PRG key must be 32 bytes, got 5$",
        ),
        (lambda: prg.mask_vector("k" * 32, 4, 32), r"^a PRG key must be 32 bytes, got"),  # type: ignore[arg-type]
        (lambda: prg.mask_vector(bytes(32), 4, 63), r"^ring bits must be in \[1, 62\]"),
        (lambda: prg.mask_vector(bytes(32), 4, 32.0), r"^ring bits must be an int"),  # type: ignore[arg-type]
        (
            lambda: prg.signed_mask_sum_into(np.zeros(4, np.uint64), [], [], 32),
            r"^accumulator must be a 1-D uint32 array$",
        ),
        (
            lambda: prg.chacha20_keystream(bytes(32), 4, nonce=bytes(8)),
            r"^a ChaCha20 nonce must be 12 bytes, got 8$",
        ),
        (
            lambda: prg.chacha20_keystream(bytes(32), 4, counter=-1),
            r"^counter must be in \[0, 2\^32\), got -1$",
        ),
        (lambda: prg.Keystream(bytes(32)).words(1 << 17), r"reads at most 65536 words"),
    ],
)
def test_bad_arguments_raise_invalid_input(call: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        call()  # type: ignore[operator]
