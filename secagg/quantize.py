"""Float vector ↔ ring: clip, scale, stochastic rounding, secret weight.

A client's float vector ``x`` (length d) and integer weight ``w`` become one
ring vector of length d + 2::

    [ w · q(x_1), …, w · q(x_d), w, clipped ]

where ``q(v) = round_stochastic(clip(v, -c, c) · scale)`` and ``clipped`` is
how many coordinates fell outside ``[-c, c]``.  All three travel under the
same masks, so the server learns only Σ w·q(x), Σ w and the total clip count.
Rounding bits come from a ChaCha20 keystream seeded by the OS CSPRNG, never
from torch's or numpy's generators.  Stochastic rounding is unbiased and off
by less than one step, so each decoded coordinate of the sum lies within
``Σ w / scale`` of the exact weighted sum of the clipped inputs.

>>> cfg = SecAggConfig(num_clients=2, threshold=2, vector_length=2, max_weight=7)
>>> q = quantize_input(np.array([0.5, -2.0]), 3, cfg)
>>> q.clipped, int(q.values[2])
(1, 3)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from secagg import crypto, ring
from secagg.config import SecAggConfig
from secagg.errors import InvalidInput
from secagg.prg import Keystream

__all__ = [
    "Dequantized",
    "QuantizedInput",
    "check_weight",
    "dequantize",
    "quantize_input",
]

_CHUNK = 1 << 16  # words per rounding block: 256 KiB of keystream


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class QuantizedInput:
    """One client's encoded vector; it never leaves the client unmasked."""

    values: ring.RingArray
    weight: int
    clipped: int
    bits: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Dequantized:
    """The decoded secure sum."""

    weighted_sum: npt.NDArray[np.float64]
    total_weight: int
    clipped: int


def check_weight(weight: int, config: SecAggConfig) -> int:
    """``weight`` as an int in ``[1, max_weight]``; :class:`InvalidInput` otherwise.

    A weight above the cap is refused, never capped: a silent cap would turn
    a FedAvg weighted by example counts into a differently weighted mean.
    """
    if isinstance(weight, bool) or not isinstance(weight, int | np.integer):
        raise InvalidInput(f"weight must be an int, got {type(weight).__name__}")
    if weight < 1:
        raise InvalidInput(f"weight must be >= 1, got {weight}")
    if weight > config.max_weight:
        raise InvalidInput(
            f"weight {weight} exceeds max_weight {config.max_weight}; raise "
            "max_weight (the ring's bit budget grows with it)"
        )
    return int(weight)


def _as_numpy(
    vector: torch.Tensor | npt.NDArray[np.floating],
) -> npt.NDArray[np.floating]:
    # Keep float32/float64 as they are: blocks are widened to float64 one at
    # a time, so no full-size float64 copy is ever allocated.
    if isinstance(vector, torch.Tensor):
        if not vector.is_floating_point():
            raise InvalidInput(f"vector must be a float tensor, got {vector.dtype}")
        t = vector.detach().to("cpu")
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)
        return t.numpy()
    arr = np.asarray(vector)
    if arr.dtype.kind != "f":
        raise InvalidInput(f"vector must be floating point, got {arr.dtype}")
    return arr


def quantize_input(
    vector: torch.Tensor | npt.NDArray[np.floating],
    weight: int,
    config: SecAggConfig,
    *,
    entropy: Callable[[int], bytes] = os.urandom,
) -> QuantizedInput:
    """Clip, scale and stochastically round ``vector``; multiply by ``weight``.

    Raises :class:`InvalidInput` for a wrong shape, non-finite values, or a
    ``weight`` (an example count) below 1 or above ``config.max_weight``.
    """
    x = _as_numpy(vector)
    if x.ndim != 1 or x.shape[0] != config.vector_length:
        raise InvalidInput(
            f"vector must be 1-D of length {config.vector_length}, got shape "
            f"{tuple(x.shape)}"
        )
    w = check_weight(weight, config)
    bits, clip, scale = config.ring_bits, float(config.clip), config.scale
    d = config.vector_length
    out = ring.zeros(config.encoded_length, bits)
    stream = Keystream(crypto.rounding_key(entropy(crypto.KEY_BYTES)))
    clipped = 0
    for start in range(0, d, _CHUNK):
        block = np.asarray(x[start : start + _CHUNK], dtype=np.float64)
        if not np.isfinite(block).all():
            raise InvalidInput("vector contains NaN or infinite values")
        clipped += int(np.count_nonzero(np.abs(block) > clip))
        v = np.clip(block, -clip, clip)
        v *= scale
        # Stochastic rounding: floor(v + u) with u uniform on a 2^-32 grid in
        # [0, 1) rounds up with probability frac(v).  float64 resolves u fully
        # while value_bits <= 21, and to 2^(value_bits - 53) beyond that.
        u = stream.words(block.shape[0]) * (1.0 / 2**32)
        v += u
        np.floor(v, out=v)
        q = v.astype(np.int64)
        if w != 1:
            q *= w
        out[start : start + block.shape[0]] = ring.encode_signed(q, bits)
    out[d] = w
    out[d + 1] = clipped
    return QuantizedInput(values=out, weight=w, clipped=clipped, bits=bits)


def dequantize(total: ring.RingArray, config: SecAggConfig) -> Dequantized:
    """Centred decode of the ring sum into Σ w·x, Σ w and the clip count."""
    if total.shape != (config.encoded_length,):
        raise InvalidInput("sum has the wrong length for this configuration")
    signed = ring.decode_centered(total, config.ring_bits)
    d = config.vector_length
    return Dequantized(
        weighted_sum=signed[:d].astype(np.float64) / config.scale,
        total_weight=int(signed[d]),
        clipped=int(signed[d + 1]),
    )
