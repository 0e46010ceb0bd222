"""ChaCha20 PRG: RFC 8439 known answers through our API, layout, dispatch."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch

from secagg import SecAggError, prg, ring
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
    assert got.dtype == ring.container_dtype(bits)
    assert got.astype(np.uint64).tolist() == expect.tolist()


def test_signed_sum_across_block_boundaries() -> None:
    # 70_001 uint32 words cross the 64 Ki-word block boundary mid-stream.
    keys = [os.urandom(32) for _ in range(3)]
    signs = [1, -1, 1]
    n = 70_001
    got = prg.signed_mask_sum(keys, signs, n, 32)
    parts = [np.frombuffer(prg.chacha20_keystream(k, 4 * n), "<u4") for k in keys]
    expect = (parts[0].astype(np.int64) - parts[1].astype(np.int64) + parts[2]) % 2**32
    assert got.tolist() == expect.tolist()
    assert prg.apply_masks(np.zeros(n, np.uint32), keys, signs, 32).tolist() == (
        got.tolist()
    )


def test_keystream_reader_continues_the_stream() -> None:
    key = os.urandom(32)
    ks = prg.Keystream(key)
    a = ks.words(5).copy()
    b = ks.words(7).copy()
    expect = np.frombuffer(prg.chacha20_keystream(key, 48), "<u4")
    assert np.concatenate([a, b]).tolist() == expect.tolist()


def test_bad_sign_and_key_rejected() -> None:
    with pytest.raises(SecAggError, match="every sign must be"):
        prg.signed_mask_sum([os.urandom(32)], [2], 4, 32)
    with pytest.raises(SecAggError, match="PRG key must be 32 bytes"):
        prg.mask_vector(b"short", 4, 32)


def test_device_dispatch_calls_torch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(keys, signs, length, bits, device):  # type: ignore[no-untyped-def]
        calls.append((tuple(keys), tuple(signs), length, bits, device.type))
        return torch.full((length,), 5, dtype=torch.int64)

    module = types.ModuleType("secagg.prg_torch")
    module.signed_mask_sum = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "secagg.prg_torch", module)
    out = prg.signed_mask_sum([bytes(32)], [1], 3, 16, "meta")
    assert out.tolist() == [5, 5, 5]
    assert calls == [((bytes(32),), (1,), 3, 16, "meta")]


def test_device_dispatch_without_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "secagg.prg_torch", None)
    with pytest.raises(SecAggError, match=r"need secagg\.prg_torch"):
        prg.signed_mask_sum([bytes(32)], [1], 3, 16, "meta")
