"""Mask PRG: ChaCha20 (RFC 8439) keystream mapped onto the ring Z_2^k.

Layout shared by every back end, so a mask never depends on the device: one
derived 32-byte key per (session, pair, tensor); ChaCha20 with an all-zero
12-byte nonce and the block counter starting at 0; keystream words are
little-endian uint32.  Ring element ``i`` is ``word_i & (2^k - 1)`` for
``k <= 32`` and ``(word_{2i} | word_{2i+1} << 32) & (2^k - 1)`` for
``32 < k <= MAX_RING_BITS``.  Power-of-two moduli make every mask exactly uniform.

This module is the host implementation: it drives pyca/OpenSSL's ChaCha20
with ``update_into`` over a reused buffer, block by block, so the accumulator
block stays in cache across all keys.  :mod:`secagg.prg_torch` computes the
same masks in torch ops on any device, :mod:`secagg.prg_triton` in a fused
CUDA kernel.

>>> mask_vector(bytes(32), 1, 32).tolist()  # RFC 8439 A.1 #1, first word
[2917185654]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from secagg.errors import InvalidInput
from secagg.ring import RingArray, check_bits, container_dtype, modulus_mask

__all__ = [
    "KEY_BYTES",
    "Keystream",
    "chacha20_keystream",
    "check_mask_args",
    "mask_vector",
    "signed_mask_sum_into",
]

KEY_BYTES = 32
# 256 KiB of keystream per block: large enough to amortise the per-call cost of
# OpenSSL, small enough that the accumulator block stays in L2 across keys.
_BLOCK_BYTES = 1 << 18
_STREAM_WORDS = 1 << 16  # most words one Keystream.words call returns
_ZEROS = bytes(max(_BLOCK_BYTES, 4 * _STREAM_WORDS))


def _check_bytes(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value)
        raise InvalidInput(f"{what} must be {size} bytes, got {got}")
    return bytes(value)


def check_mask_args(
    keys: Sequence[bytes], signs: Sequence[int], bits: int, low_bits: int = 1
) -> None:
    """Refuse, with :class:`InvalidInput`, masks no back end can compute."""
    check_bits(bits, low_bits)
    if len(keys) != len(signs):
        raise InvalidInput(f"{len(keys)} keys but {len(signs)} signs")
    if any(isinstance(s, bool) or s not in (1, -1) for s in signs):
        raise InvalidInput("every sign must be +1 or -1")
    for k in keys:
        _check_bytes(k, KEY_BYTES, "a PRG key")


def _encryptor(key: bytes, nonce: bytes = bytes(12), counter: int = 0) -> Any:
    key = _check_bytes(key, KEY_BYTES, "a PRG key")
    nonce = _check_bytes(nonce, 12, "a ChaCha20 nonce")
    if isinstance(counter, bool) or not isinstance(counter, int):
        raise InvalidInput(f"counter must be an int, got {counter!r}")
    if not 0 <= counter < 1 << 32:
        raise InvalidInput(f"counter must be in [0, 2^32), got {counter}")
    # pyca takes the 16-byte "full nonce": LE32 block counter || 96-bit nonce.
    full = counter.to_bytes(4, "little") + nonce
    return Cipher(algorithms.ChaCha20(key, full), mode=None).encryptor()


def chacha20_keystream(
    key: bytes, nbytes: int, *, nonce: bytes = bytes(12), counter: int = 0
) -> bytes:
    """Raw ChaCha20 keystream (RFC 8439 §2.4 with an all-zero plaintext)."""
    return bytes(_encryptor(key, nonce, counter).update(bytes(nbytes)))


def _word_bytes(bits: int) -> int:
    return 4 if bits <= 32 else 8


class Keystream:
    """A ChaCha20 stream read as little-endian words into one reused buffer."""

    def __init__(self, key: bytes) -> None:
        self._enc = _encryptor(key)
        self._buf = bytearray(4 * _STREAM_WORDS)

    def words(self, count: int) -> npt.NDArray[np.uint32]:
        """The next ``count`` uint32 words (at most 65536).

        The view is overwritten by the next call; copy it to keep it.
        """
        if not 0 <= count <= _STREAM_WORDS:
            raise InvalidInput(f"Keystream.words reads at most {_STREAM_WORDS} words")
        nbytes = 4 * count
        view = memoryview(self._buf)[:nbytes]
        self._enc.update_into(memoryview(_ZEROS)[:nbytes], view)
        return np.frombuffer(self._buf, dtype="<u4", count=count)


def signed_mask_sum_into(
    acc: RingArray, keys: Sequence[bytes], signs: Sequence[int], bits: int
) -> RingArray:
    """``acc += Σ_i signs[i] · PRG(keys[i])`` in Z_2^bits, in place (CPU).

    ``acc`` is a 1-D host container (uint32 for bits <= 32, else uint64).
    """
    check_mask_args(keys, signs, bits)
    want = container_dtype(bits)
    if not isinstance(acc, np.ndarray) or acc.dtype != want or acc.ndim != 1:
        raise InvalidInput(f"accumulator must be a 1-D {want} array")
    wb = _word_bytes(bits)
    per_block = _BLOCK_BYTES // wb
    encs = [_encryptor(k) for k in keys]
    buf = bytearray(_BLOCK_BYTES)
    mv, zeros = memoryview(buf), memoryview(_ZEROS)
    length = acc.shape[0]
    for start in range(0, length, per_block):
        count = min(per_block, length - start)
        nbytes = count * wb
        block = acc[start : start + count]
        ks = np.frombuffer(buf, dtype=acc.dtype, count=count)
        for enc, sign in zip(encs, signs, strict=True):
            enc.update_into(zeros[:nbytes], mv[:nbytes])
            # Container arithmetic wraps mod 2^32 / 2^64; 2^bits divides both,
            # so one reduction at the end is exact.
            if sign > 0:
                np.add(block, ks, out=block)
            else:
                np.subtract(block, ks, out=block)
        del ks
    if bits != 32:
        np.bitwise_and(acc, acc.dtype.type(modulus_mask(bits)), out=acc)
    return acc


def mask_vector(key: bytes, length: int, bits: int) -> RingArray:
    """``PRG(key)``: ``length`` uniform elements of Z_2^bits."""
    check_bits(bits, 1)
    return signed_mask_sum_into(
        np.zeros(length, container_dtype(bits)), [key], [1], bits
    )
