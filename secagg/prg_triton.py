"""Fused CUDA kernel (Triton) for signed sums of ChaCha20 ring masks.

One program handles ``BLOCK`` consecutive 64-byte ChaCha20 blocks. For every
key it runs the 20 rounds with the 16-word state in registers (uint32
arithmetic wrapping mod 2^32) and adds ``sign · keystream`` into per-element
accumulators, so the only memory traffic is one read of the key table and one
write of the final sum: no keystream is ever materialised. Accumulating mod
2^32 (or mod 2^64 for the two-word layout of rings wider than 32 bits) and
masking once at the end equals reducing mod 2^k at every step, since 2^k
divides the accumulator's modulus.

A mask too short to give every SM several programs (the server's d = 100K is
only 49 tiles) has its keys split over a second grid axis; each split writes a
partial sum (about 8 tiles' worth of scratch per SM in all) that one torch
reduction folds into the output.

Triton is optional: this module imports without it, :func:`triton_available`
says whether the kernel can run, and :mod:`secagg.prg_torch` falls back to
eager torch ops otherwise. The output is bit-for-bit that of
:func:`secagg.prg_torch.signed_mask_sum` (the oracle of the GPU tests).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Any

import torch

from secagg.errors import BackendUnavailable
from secagg.prg_torch import check_mask_call

__all__ = ["signed_mask_sum_triton", "triton_available"]

try:  # Triton ships with Linux CUDA builds of torch; CPU machines lack it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on machines without Triton
    triton = None
    tl = None

_BLOCK = 128  # ChaCha20 blocks per program: 2 KiB of output for 32-bit rings
_NUM_WARPS = 4
# Aim for this many programs per SM; short masks (e.g. d = 100K is only 49
# tiles of 128 blocks) split their keys over more programs to get there.
_PROGRAMS_PER_SM = 8
_MAX_SPLITS = 64


def _interpreting() -> bool:
    # TRITON_INTERPRET=1 runs kernels on CPU tensors through numpy (tests only).
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def triton_available() -> bool:
    """True when Triton is importable and a CUDA device is present."""
    return triton is not None and torch.cuda.is_available()


if triton is not None:

    @triton.jit  # type: ignore[untyped-decorator,misc]
    def _arx(x: tl.tensor, y: tl.tensor, z: tl.tensor, R: tl.constexpr) -> Any:
        # One quarter-round step: x += y; z ^= x; z <<<= R (uint32 lanes).
        x = x + y
        z = z ^ x
        return x, (z << R) | (z >> (32 - R))

    @triton.jit  # type: ignore[untyped-decorator,misc]
    def _qr(a: tl.tensor, b: tl.tensor, c: tl.tensor, d: tl.tensor) -> Any:
        a, d = _arx(a, b, d, 16)
        c, b = _arx(c, d, b, 12)
        a, d = _arx(a, b, d, 8)
        c, b = _arx(c, d, b, 7)
        return a, b, c, d

    @triton.jit  # type: ignore[untyped-decorator,misc]
    def _mask_sum_kernel(
        key_ptr: tl.tensor,
        sign_ptr: tl.tensor,
        out_ptr: tl.tensor,
        n_keys: tl.tensor,
        keys_per_split: tl.tensor,
        n_elems: tl.tensor,
        nonce_ptr: tl.tensor,
        MASK: tl.constexpr,
        TWO_WORDS: tl.constexpr,
        ELEMS: tl.constexpr,
        BLOCK: tl.constexpr,
    ) -> None:
        pid = tl.program_id(0)
        # Axis 1 splits the keys when the mask is too short to fill the GPU;
        # split s writes its partial sum to row s of the output.
        split = tl.program_id(1)
        k_lo = split * keys_per_split
        k_hi = tl.minimum(k_lo + keys_per_split, n_keys)
        out_ptr += split.to(tl.int64) * n_elems
        blk = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        ctr = blk.to(tl.uint32)  # the launcher keeps every block below 2^32
        n0 = tl.load(nonce_ptr + 0).to(tl.uint32, bitcast=True)
        n1 = tl.load(nonce_ptr + 1).to(tl.uint32, bitcast=True)
        n2 = tl.load(nonce_ptr + 2).to(tl.uint32, bitcast=True)
        c0 = tl.full((BLOCK,), 0x61707865, tl.uint32)
        c1 = tl.full((BLOCK,), 0x3320646E, tl.uint32)
        c2 = tl.full((BLOCK,), 0x79622D32, tl.uint32)
        c3 = tl.full((BLOCK,), 0x6B206574, tl.uint32)
        # A constexpr branch, not a ternary: Triton resolves it at compile time.
        if TWO_WORDS:  # noqa: SIM108
            acc_t = tl.uint64
        else:
            acc_t = tl.uint32
        s0 = tl.zeros((BLOCK,), acc_t)
        s1 = tl.zeros((BLOCK,), acc_t)
        s2 = tl.zeros((BLOCK,), acc_t)
        s3 = tl.zeros((BLOCK,), acc_t)
        s4 = tl.zeros((BLOCK,), acc_t)
        s5 = tl.zeros((BLOCK,), acc_t)
        s6 = tl.zeros((BLOCK,), acc_t)
        s7 = tl.zeros((BLOCK,), acc_t)
        s8 = tl.zeros((BLOCK,), tl.uint32)
        s9 = tl.zeros((BLOCK,), tl.uint32)
        s10 = tl.zeros((BLOCK,), tl.uint32)
        s11 = tl.zeros((BLOCK,), tl.uint32)
        s12 = tl.zeros((BLOCK,), tl.uint32)
        s13 = tl.zeros((BLOCK,), tl.uint32)
        s14 = tl.zeros((BLOCK,), tl.uint32)
        s15 = tl.zeros((BLOCK,), tl.uint32)
        for j in range(k_lo, k_hi):
            base = key_ptr + j * 8
            k0 = tl.load(base + 0).to(tl.uint32, bitcast=True)
            k1 = tl.load(base + 1).to(tl.uint32, bitcast=True)
            k2 = tl.load(base + 2).to(tl.uint32, bitcast=True)
            k3 = tl.load(base + 3).to(tl.uint32, bitcast=True)
            k4 = tl.load(base + 4).to(tl.uint32, bitcast=True)
            k5 = tl.load(base + 5).to(tl.uint32, bitcast=True)
            k6 = tl.load(base + 6).to(tl.uint32, bitcast=True)
            k7 = tl.load(base + 7).to(tl.uint32, bitcast=True)
            # -1 as uint32 is 2^32 - 1: multiplying by it negates mod 2^32.
            sg = tl.load(sign_ptr + j).to(tl.uint32, bitcast=True)
            x0, x1, x2, x3 = c0, c1, c2, c3
            x4 = k0 + tl.zeros((BLOCK,), tl.uint32)
            x5 = k1 + tl.zeros((BLOCK,), tl.uint32)
            x6 = k2 + tl.zeros((BLOCK,), tl.uint32)
            x7 = k3 + tl.zeros((BLOCK,), tl.uint32)
            x8 = k4 + tl.zeros((BLOCK,), tl.uint32)
            x9 = k5 + tl.zeros((BLOCK,), tl.uint32)
            x10 = k6 + tl.zeros((BLOCK,), tl.uint32)
            x11 = k7 + tl.zeros((BLOCK,), tl.uint32)
            x12 = ctr
            x13 = n0 + tl.zeros((BLOCK,), tl.uint32)
            x14 = n1 + tl.zeros((BLOCK,), tl.uint32)
            x15 = n2 + tl.zeros((BLOCK,), tl.uint32)
            for _ in tl.static_range(10):
                x0, x4, x8, x12 = _qr(x0, x4, x8, x12)
                x1, x5, x9, x13 = _qr(x1, x5, x9, x13)
                x2, x6, x10, x14 = _qr(x2, x6, x10, x14)
                x3, x7, x11, x15 = _qr(x3, x7, x11, x15)
                x0, x5, x10, x15 = _qr(x0, x5, x10, x15)
                x1, x6, x11, x12 = _qr(x1, x6, x11, x12)
                x2, x7, x8, x13 = _qr(x2, x7, x8, x13)
                x3, x4, x9, x14 = _qr(x3, x4, x9, x14)
            x0 += c0
            x1 += c1
            x2 += c2
            x3 += c3
            x4 += k0
            x5 += k1
            x6 += k2
            x7 += k3
            x8 += k4
            x9 += k5
            x10 += k6
            x11 += k7
            x12 += ctr
            x13 += n0
            x14 += n1
            x15 += n2
            if TWO_WORDS:
                # Element i = word_2i | word_2i+1 << 32, summed mod 2^64.
                sg64 = sg.to(tl.int32, bitcast=True).to(tl.int64)
                sg64 = sg64.to(tl.uint64, bitcast=True)
                s0 += (x0.to(tl.uint64) | (x1.to(tl.uint64) << 32)) * sg64
                s1 += (x2.to(tl.uint64) | (x3.to(tl.uint64) << 32)) * sg64
                s2 += (x4.to(tl.uint64) | (x5.to(tl.uint64) << 32)) * sg64
                s3 += (x6.to(tl.uint64) | (x7.to(tl.uint64) << 32)) * sg64
                s4 += (x8.to(tl.uint64) | (x9.to(tl.uint64) << 32)) * sg64
                s5 += (x10.to(tl.uint64) | (x11.to(tl.uint64) << 32)) * sg64
                s6 += (x12.to(tl.uint64) | (x13.to(tl.uint64) << 32)) * sg64
                s7 += (x14.to(tl.uint64) | (x15.to(tl.uint64) << 32)) * sg64
            else:
                s0 += x0 * sg
                s1 += x1 * sg
                s2 += x2 * sg
                s3 += x3 * sg
                s4 += x4 * sg
                s5 += x5 * sg
                s6 += x6 * sg
                s7 += x7 * sg
                s8 += x8 * sg
                s9 += x9 * sg
                s10 += x10 * sg
                s11 += x11 * sg
                s12 += x12 * sg
                s13 += x13 * sg
                s14 += x14 * sg
                s15 += x15 * sg
        # ELEMS ring elements per ChaCha20 block: 16 (one word each) or 8.
        o = blk * ELEMS
        _store8(out_ptr, o, s0, s1, s2, s3, s4, s5, s6, s7, n_elems, MASK)
        if not TWO_WORDS:
            _store8(out_ptr, o + 8, s8, s9, s10, s11, s12, s13, s14, s15, n_elems, MASK)

    @triton.jit  # type: ignore[untyped-decorator,misc]
    def _store8(
        out_ptr: tl.tensor,
        o: tl.tensor,
        a0: tl.tensor,
        a1: tl.tensor,
        a2: tl.tensor,
        a3: tl.tensor,
        a4: tl.tensor,
        a5: tl.tensor,
        a6: tl.tensor,
        a7: tl.tensor,
        n_elems: tl.tensor,
        MASK: tl.constexpr,
    ) -> None:
        # Elements o .. o + 7 of each block (inlined by the compiler).
        _store(out_ptr, o + 0, a0, n_elems, MASK)
        _store(out_ptr, o + 1, a1, n_elems, MASK)
        _store(out_ptr, o + 2, a2, n_elems, MASK)
        _store(out_ptr, o + 3, a3, n_elems, MASK)
        _store(out_ptr, o + 4, a4, n_elems, MASK)
        _store(out_ptr, o + 5, a5, n_elems, MASK)
        _store(out_ptr, o + 6, a6, n_elems, MASK)
        _store(out_ptr, o + 7, a7, n_elems, MASK)

    @triton.jit  # type: ignore[untyped-decorator,misc]
    def _store(
        out_ptr: tl.tensor,
        idx: tl.tensor,
        acc: tl.tensor,
        n_elems: tl.tensor,
        MASK: tl.constexpr,
    ) -> None:
        # Zero-extend to 64 bits first so a MASK above 2^32 never truncates.
        val = acc.to(tl.uint64) & MASK
        tl.store(out_ptr + idx, val.to(tl.int64, bitcast=True), mask=idx < n_elems)


def signed_mask_sum_triton(
    keys: Sequence[bytes],
    signs: Sequence[int],
    length: int,
    bits: int,
    device: torch.device | str,
    *,
    out: torch.Tensor | None = None,
    chunk_elems: int | None = None,
) -> torch.Tensor:
    """Fused-kernel version of :func:`secagg.prg_torch.signed_mask_sum`.

    Same arguments, checks and result (int64 in [0, 2^bits), 1 <= bits <=
    MAX_RING_BITS).  ``chunk_elems`` is accepted for signature compatibility
    and ignored: the kernel materialises no keystream, only (for short masks)
    a few MiB of per-split partial sums.  Raises :class:`BackendUnavailable`
    when Triton or a CUDA device is missing.
    """
    del chunk_elems
    if triton is None:
        raise BackendUnavailable("the fused mask kernel needs Triton, not installed")
    dev, out = check_mask_call(keys, signs, length, bits, device, out)
    if dev.type != "cuda" and not _interpreting():
        raise BackendUnavailable(f"the Triton kernel needs a CUDA device, got {dev}")
    two_words = bits > 32
    n_blocks = -(-length // (8 if two_words else 16))
    if length == 0:
        return out
    # Key words as int32 bit patterns: Triton loads them and bitcasts to uint32.
    words = struct.unpack(f"<{8 * len(keys)}i", b"".join(bytes(k) for k in keys))
    key_t = torch.tensor(words, dtype=torch.int32, device=dev)
    sign_t = torch.tensor(list(signs), dtype=torch.int32, device=dev)
    nonce_t = torch.zeros(3, dtype=torch.int32, device=dev)
    if not keys:
        return out.zero_()
    tiles = triton.cdiv(n_blocks, _BLOCK)
    splits, per_split = _splits(dev, len(keys), tiles)
    # Partial sums need scratch rows: at most ~PROGRAMS_PER_SM * sms tiles' worth.
    dst = (
        out
        if splits == 1
        else torch.empty((splits, length), dtype=torch.int64, device=dev)
    )
    _mask_sum_kernel[(tiles, splits)](
        key_t,
        sign_t,
        dst,
        len(keys),
        per_split,
        length,
        nonce_t,
        MASK=(1 << bits) - 1,
        TWO_WORDS=two_words,
        ELEMS=8 if two_words else 16,
        BLOCK=_BLOCK,
        num_warps=_NUM_WARPS,
    )
    if splits > 1:
        _fold(dst, out, bits)
    return out


def _splits(dev: torch.device, n_keys: int, tiles: int) -> tuple[int, int]:
    """How many key splits (grid axis 1) and keys per split fill the device."""
    sms = (
        torch.cuda.get_device_properties(dev).multi_processor_count
        if dev.type == "cuda"
        else 2
    )
    splits = min(n_keys, _MAX_SPLITS, max(1, -(-_PROGRAMS_PER_SM * sms // tiles)))
    per_split = -(-n_keys // splits)
    return -(-n_keys // per_split), per_split  # no split without keys


def _fold(partials: torch.Tensor, out: torch.Tensor, bits: int) -> None:
    """``out = Σ partials mod 2^bits`` over the rows of the per-split sums."""
    mask = (1 << bits) - 1
    if bits <= 32:
        # At most 64 partials below 2^32: the int64 sum cannot overflow.
        torch.sum(partials, dim=0, out=out).bitwise_and_(mask)
    else:
        out.copy_(partials[0])
        for row in partials[1:]:
            out.add_(row).bitwise_and_(mask)
