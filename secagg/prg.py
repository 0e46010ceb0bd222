"""Mask PRG: ChaCha20 (RFC 8439) keystream mapped onto the ring Z_2^k.

Layout shared by every back end, so a mask never depends on the device: one
derived 32-byte key per (session, pair, tensor); ChaCha20 with an all-zero
12-byte nonce and the block counter starting at 0; keystream words are
little-endian uint32.  Ring element ``i`` is ``word_i & (2^k - 1)`` for
``k <= 32`` and ``(word_{2i} | word_{2i+1} << 32) & (2^k - 1)`` for
``32 < k <= MAX_RING_BITS``.  Power-of-two moduli make every mask exactly uniform.

The CPU back end drives pyca/OpenSSL's ChaCha20 with ``update_into`` over a
reused buffer, block by block, so the accumulator block stays in cache across
all keys.  Other devices go to :mod:`secagg.prg_torch` (imported lazily).

>>> mask_vector(bytes(32), 1, 32).tolist()  # RFC 8439 A.1 #1, first word
[2917185654]
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from secagg import ring
from secagg.errors import SecAggError

__all__ = [
    "KEY_BYTES",
    "Keystream",
    "apply_masks",
    "chacha20_keystream",
    "mask_vector",
    "signed_mask_sum",
    "signed_mask_sum_into",
]

KEY_BYTES = 32
# 256 KiB of keystream per block: large enough to amortise the per-call cost of
# OpenSSL, small enough that the accumulator block stays in L2 across keys.
_BLOCK_BYTES = 1 << 18
_STREAM_WORDS = 1 << 16  # most words one Keystream.words call returns
_ZEROS = bytes(max(_BLOCK_BYTES, 4 * _STREAM_WORDS))


def _encryptor(key: bytes, nonce: bytes = bytes(12), counter: int = 0) -> Any:
    if len(key) != KEY_BYTES:
        raise SecAggError(f"PRG key must be 32 bytes, got {len(key)}")
    if len(nonce) != 12:
        raise SecAggError(f"ChaCha20 nonce must be 12 bytes, got {len(nonce)}")
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
            raise SecAggError(f"Keystream.words reads at most {_STREAM_WORDS} words")
        nbytes = 4 * count
        view = memoryview(self._buf)[:nbytes]
        self._enc.update_into(memoryview(_ZEROS)[:nbytes], view)
        return np.frombuffer(self._buf, dtype="<u4", count=count)


def signed_mask_sum_into(
    acc: ring.RingArray, keys: Sequence[bytes], signs: Sequence[int], bits: int
) -> ring.RingArray:
    """``acc += Σ_i signs[i] · PRG(keys[i])`` in Z_2^bits, in place (CPU)."""
    if len(keys) != len(signs):
        raise SecAggError("keys and signs must have the same length")
    if any(s not in (1, -1) for s in signs):
        raise SecAggError("every sign must be +1 or -1")
    if acc.dtype != ring.container_dtype(bits):
        raise SecAggError("accumulator dtype does not match the ring")
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
    return ring.reduce(acc, bits)


def mask_vector(key: bytes, length: int, bits: int) -> ring.RingArray:
    """``PRG(key)``: ``length`` uniform elements of Z_2^bits."""
    return signed_mask_sum_into(ring.zeros(length, bits), [key], [1], bits)


def _torch_backend() -> Callable[..., torch.Tensor]:
    try:
        module = importlib.import_module("secagg.prg_torch")
    except ImportError as exc:
        raise SecAggError(
            "masks on a non-CPU device need secagg.prg_torch, which is not "
            "available; use device='cpu'"
        ) from exc
    return cast(Callable[..., torch.Tensor], module.signed_mask_sum)


def signed_mask_sum(
    keys: Sequence[bytes],
    signs: Sequence[int],
    length: int,
    bits: int,
    device: torch.device | str = "cpu",
) -> ring.RingArray:
    """``Σ_i signs[i] · PRG(keys[i])`` as a reduced ring vector on the host.

    The device only chooses where the keystream is computed; the result is
    bit-identical on every device.
    """
    dev = torch.device(device)
    if dev.type == "cpu":
        return signed_mask_sum_into(ring.zeros(length, bits), keys, signs, bits)
    out = _torch_backend()(list(keys), list(signs), length, bits, dev)
    values = out.to(device="cpu", dtype=torch.int64).numpy()
    if values.shape != (length,):
        raise SecAggError("device PRG returned a vector of the wrong shape")
    return ring.from_int64(values, bits)


def apply_masks(
    values: ring.RingArray,
    keys: Sequence[bytes],
    signs: Sequence[int],
    bits: int,
    device: torch.device | str = "cpu",
) -> ring.RingArray:
    """``values + Σ_i signs[i] · PRG(keys[i])`` as a new reduced ring vector.

    On the CPU the masks are added straight into a copy of ``values``, so no
    mask vector is ever materialised.
    """
    if torch.device(device).type == "cpu":
        return signed_mask_sum_into(values.copy(), keys, signs, bits)
    masks = signed_mask_sum(keys, signs, values.shape[0], bits, device)
    return ring.add(values, masks, bits)
