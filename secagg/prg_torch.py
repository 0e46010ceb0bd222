"""ChaCha20 (RFC 8439) keystream and ring masks as torch tensor ops, any device.

This is the device-agnostic back end of the mask PRG and the bit-exact oracle
for the fused CUDA kernel in :mod:`secagg.prg_triton`. Words live in int64
lanes with an explicit 32-bit mask after every addition: torch's ``uint32``
lacks ``add`` and shifts, and int64 never relies on signed overflow, so the
same code is exact on CPU and CUDA.

Keystream contract (shared with the CPU back end built on pyca's ChaCha20,
whose 16-byte nonce is LE32 counter || 96-bit nonce): one 32-byte key, a
12-byte all-zero nonce, block counter from 0, words read little-endian. Ring
element ``i`` of Z_2^k is ``word_i & (2^k - 1)`` for k <= 32 and
``(word_{2i} | word_{2i+1} << 32) & (2^k - 1)`` for 32 < k <= MAX_RING_BITS.

The state tensor has shape (16, B), one column per 64-byte block; B spans
several keys times several blocks so one eager launch does many keys' work.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import torch

from secagg.errors import InvalidInput
from secagg.prg import KEY_BYTES, check_mask_args
from secagg.ring import check_bits

__all__ = [
    "chacha20_words",
    "check_mask_call",
    "ring_mask",
    "signed_mask_sum",
]


_M32 = 0xFFFFFFFF
_SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)  # "expand 32-byte k"
_MAX_BLOCKS = 1 << 32  # the RFC 8439 block counter is 32 bits wide
# Budget of (key, ring element) pairs per eager batch: peak memory is roughly
# 40 bytes per pair per word (state, initial state, temporaries), so ~160 MiB
# on CPU and ~1.3 GiB on CUDA, where bigger batches amortise launches.
_DEFAULT_CHUNK_CPU = 1 << 22
_DEFAULT_CHUNK_CUDA = 1 << 25


def _key_words(key: bytes) -> tuple[int, ...]:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise InvalidInput("a ChaCha20 key must be 32 bytes")
    return struct.unpack("<8I", bytes(key))


def _nonce_words(nonce: bytes) -> tuple[int, ...]:
    if not isinstance(nonce, bytes | bytearray) or len(nonce) != 12:
        raise InvalidInput("a ChaCha20 (RFC 8439) nonce must be 12 bytes")
    return struct.unpack("<3I", bytes(nonce))


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what} must be an int >= 0, got {value!r}")
    return value


def _resolve(device: torch.device | str) -> torch.device:
    """Canonical device, so ``"cuda"`` compares equal to a tensor's ``cuda:0``."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def check_mask_call(
    keys: Sequence[bytes],
    signs: Sequence[int],
    length: int,
    bits: int,
    device: torch.device | str,
    out: torch.Tensor | None,
) -> tuple[torch.device, torch.Tensor]:
    """Validate a ``signed_mask_sum`` call of any kernel before any work;
    return the canonical device and the output tensor."""
    check_mask_args(keys, signs, bits)
    _count(length, "length")
    per = 1 if bits <= 32 else 2
    if -(-(per * length) // 16) > _MAX_BLOCKS:
        raise InvalidInput("mask longer than one ChaCha20 key stream (2^32 blocks)")
    dev = _resolve(device)
    if out is None:
        return dev, torch.empty(length, dtype=torch.int64, device=dev)
    if (
        not isinstance(out, torch.Tensor)
        or out.dtype != torch.int64
        or tuple(out.shape) != (length,)
        or out.device != dev
        or not out.is_contiguous()
    ):
        raise InvalidInput(
            "out must be a contiguous int64 tensor of shape (length,) on device"
        )
    return dev, out


def _rotl(x: torch.Tensor, n: int) -> torch.Tensor:
    """In-place 32-bit left rotation of int64 lanes holding values < 2^32."""
    low = x >> (32 - n)  # logical, since the sign bit of an int64 lane is 0
    return x.bitwise_left_shift_(n).bitwise_and_(_M32).bitwise_or_(low)


def _quarter_rounds(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor
) -> None:
    """Four RFC 8439 quarter rounds at once: one per row of the (4, B) views."""
    a.add_(b).bitwise_and_(_M32)
    _rotl(d.bitwise_xor_(a), 16)
    c.add_(d).bitwise_and_(_M32)
    _rotl(b.bitwise_xor_(c), 12)
    a.add_(b).bitwise_and_(_M32)
    _rotl(d.bitwise_xor_(a), 8)
    c.add_(d).bitwise_and_(_M32)
    _rotl(b.bitwise_xor_(c), 7)


def _blocks(
    key_words: torch.Tensor, n_blocks: int, counter: int, nonce: Sequence[int]
) -> torch.Tensor:
    """Keystream words of ``n_blocks`` blocks for each key: shape (K, 16·n_blocks).

    ``key_words`` is an int64 (K, 8) tensor of little-endian key words on the
    target device; blocks use counters ``counter .. counter + n_blocks - 1``.
    """
    n_keys = key_words.shape[0]
    device = key_words.device
    state = torch.empty((16, n_keys * n_blocks), dtype=torch.int64, device=device)
    for row, word in enumerate(_SIGMA):
        state[row].fill_(word)
    state[4:12] = key_words.t().repeat_interleave(n_blocks, dim=1)
    ctr = torch.arange(counter, counter + n_blocks, dtype=torch.int64, device=device)
    state[12] = ctr.repeat(n_keys)
    for row, word in enumerate(nonce):
        state[13 + row].fill_(word)
    x = state.clone()
    a, b, c, d = x[0:4], x[4:8], x[8:12], x[12:16]
    for _ in range(10):
        _quarter_rounds(a, b, c, d)  # column round
        # Rolling rows b, c, d by 1, 2, 3 turns the diagonals into columns.
        b.copy_(b.roll(-1, 0))
        c.copy_(c.roll(-2, 0))
        d.copy_(d.roll(-3, 0))
        _quarter_rounds(a, b, c, d)  # diagonal round
        b.copy_(b.roll(1, 0))
        c.copy_(c.roll(2, 0))
        d.copy_(d.roll(3, 0))
    x.add_(state).bitwise_and_(_M32)
    # Column j = key * n_blocks + block; word w of a block is row w.
    return x.view(16, n_keys, n_blocks).permute(1, 2, 0).reshape(n_keys, -1)


def _key_tensor(keys: Sequence[bytes], device: torch.device) -> torch.Tensor:
    words = [_key_words(k) for k in keys]
    return torch.tensor(words, dtype=torch.int64, device=device).reshape(-1, 8)


def chacha20_words(
    key: bytes,
    n_words: int,
    *,
    device: torch.device | str,
    counter: int = 0,
    nonce: bytes = bytes(12),
) -> torch.Tensor:
    """The first ``n_words`` little-endian uint32 keystream words, as int64.

    Block ``counter`` supplies words 0..15, block ``counter + 1`` words 16..31,
    and so on, exactly as RFC 8439 (and pyca's ChaCha20 with the 16-byte nonce
    ``counter.to_bytes(4, "little") + nonce``). Values lie in [0, 2^32).
    """
    n_blocks = -(-_count(n_words, "n_words") // 16)
    if _count(counter, "counter") + n_blocks > _MAX_BLOCKS:
        raise InvalidInput("the 32-bit ChaCha20 block counter would overflow")
    nonce_w = _nonce_words(nonce)
    dev = _resolve(device)
    words = _blocks(_key_tensor([key], dev), n_blocks, counter, nonce_w)
    return words[0, :n_words].contiguous()


def _ring_from_words(words: torch.Tensor, bits: int) -> torch.Tensor:
    """Map (..., w·L) keystream words to (..., L) ring elements (w = 1 or 2)."""
    mask = (1 << bits) - 1
    if bits <= 32:
        return words if bits == 32 else words & mask
    pairs = words.reshape(*words.shape[:-1], -1, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 32)) & mask


def ring_mask(
    key: bytes, length: int, bits: int, *, device: torch.device | str
) -> torch.Tensor:
    """PRG mask of ``length`` elements of Z_2^bits from ``key`` (int64)."""
    check_bits(bits, 1)
    per = 1 if bits <= 32 else 2
    words = chacha20_words(key, per * length, device=device)
    return _ring_from_words(words, bits).contiguous()


def _signed_sum(vals: torch.Tensor, signs: torch.Tensor, bits: int) -> torch.Tensor:
    """Σ_j signs_j · vals_j mod 2^bits, never overflowing int64 (vals < 2^bits)."""
    mask = (1 << bits) - 1
    if bits <= 32:
        # |Σ| < 2^32 · #keys stays far inside int64 for any realistic batch.
        return (vals * signs).sum(0).bitwise_and_(mask)
    # Split at bit 31 so each partial sum stays below 2^(31+31) for < 2^31 keys.
    low = ((vals & 0x7FFFFFFF) * signs).sum(0)
    high = ((vals >> 31) * signs).sum(0).bitwise_and_((1 << (bits - 31)) - 1)
    return (low + (high << 31)).bitwise_and_(mask)


def signed_mask_sum(
    keys: Sequence[bytes],
    signs: Sequence[int],
    length: int,
    bits: int,
    device: torch.device | str,
    *,
    out: torch.Tensor | None = None,
    chunk_elems: int | None = None,
) -> torch.Tensor:
    """Σ_j signs_j · ring_mask(keys_j) mod 2^bits as int64 values in [0, 2^bits).

    A client sums its pair masks this way (signs ±1 by id order), and the server
    regenerates all of one dropped client's pair masks in one call (keys = its
    surviving neighbours). ``out`` (int64, shape (length,), on ``device``), if
    given, is overwritten with the result and returned.

    Eager torch ops run in batches of at most ``chunk_elems`` (key, element)
    pairs, which bounds peak memory; :func:`secagg.prg_triton.signed_mask_sum_triton`
    is the fused CUDA kernel with the same result.
    """
    dev, out = check_mask_call(keys, signs, length, bits, device, out)
    if chunk_elems is not None and _count(chunk_elems, "chunk_elems") < 16:
        raise InvalidInput(f"chunk_elems must be >= 16, got {chunk_elems}")
    key_words = [_key_words(k) for k in keys]
    per = 1 if bits <= 32 else 2
    out.zero_()
    if not keys or length == 0:
        return out
    if chunk_elems is None:
        chunk_elems = _DEFAULT_CHUNK_CUDA if dev.type == "cuda" else _DEFAULT_CHUNK_CPU
    # Element chunks start on block boundaries (16 words = 16/per elements).
    span = min(-(-length // 16) * 16, chunk_elems // 16 * 16)
    group = max(1, chunk_elems // span)
    kw_all = torch.tensor(key_words, dtype=torch.int64, device=dev)
    sg_all = torch.tensor(list(signs), dtype=torch.int64, device=dev)
    mask = (1 << bits) - 1
    for start in range(0, length, span):
        stop = min(start + span, length)
        first_block = start * per // 16
        n_blocks = -(-((stop - start) * per) // 16)
        for g in range(0, len(keys), group):
            words = _blocks(kw_all[g : g + group], n_blocks, first_block, (0, 0, 0))
            vals = _ring_from_words(words[:, : (stop - start) * per], bits)
            part = _signed_sum(vals, sg_all[g : g + group, None], bits)
            dst = out[start:stop]
            dst.add_(part).bitwise_and_(mask)
    return out
