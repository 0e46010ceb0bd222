"""Float tensor ↔ ring on the tensor's own device (the device path).

The same encoding as :mod:`secagg.quantize`, bit for bit, without leaving the
device: clip to ``[-c, c]`` (counting the clipped coordinates), scale, add a
rounding offset ``u`` on the 2^-32 grid and floor, multiply by the weight,
append the weight and the clip count, reduce into Z_2^k as int64 lanes.  The
rounding words are the ChaCha20 keystream of the same derived rounding key,
computed on the device by :func:`secagg.prg_torch.chacha20_words`; word ``i``
rounds coordinate ``i`` on both paths, so equal entropy gives equal output.
torch's RNG never supplies a rounding bit.

>>> cfg = SecAggConfig(num_clients=2, threshold=2, vector_length=2, max_weight=7)
>>> q = quantize_tensor(torch.tensor([0.5, -2.0]), 3, cfg)
>>> q.clipped, int(q.values[2])
(1, 3)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from secagg import crypto, ring
from secagg.config import SecAggConfig
from secagg.errors import InvalidInput
from secagg.prg_torch import chacha20_words
from secagg.quantize import QuantizedInput, check_weight

__all__ = [
    "DeviceDequantized",
    "DeviceQuantizedInput",
    "dequantize_tensor",
    "from_host",
    "quantize_tensor",
    "to_host",
]

# Coordinates per rounding block: a multiple of 16 words so each block starts
# on a ChaCha20 block boundary; bounds the eager keystream's scratch memory.
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class DeviceQuantizedInput:
    """One client's encoded vector as an int64 ring tensor on its device."""

    values: torch.Tensor
    weight: int
    clipped: int
    bits: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class DeviceDequantized:
    """The decoded secure sum; ``weighted_sum`` stays on the sum's device."""

    weighted_sum: torch.Tensor
    total_weight: int
    clipped: int


def quantize_tensor(
    vector: torch.Tensor,
    weight: int,
    config: SecAggConfig,
    *,
    entropy: Callable[[int], bytes] = os.urandom,
) -> DeviceQuantizedInput:
    """:func:`secagg.quantize.quantize_input` for a tensor, on its device.

    Raises :class:`InvalidInput` exactly where the host version does.
    """
    if not isinstance(vector, torch.Tensor) or not vector.is_floating_point():
        raise InvalidInput("vector must be a float tensor")
    x = vector.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)  # as the host path does for half precision
    if x.ndim != 1 or x.shape[0] != config.vector_length:
        raise InvalidInput(
            f"vector must be 1-D of length {config.vector_length}, got shape "
            f"{tuple(x.shape)}"
        )
    w = check_weight(weight, config)
    bits, clip, scale = config.ring_bits, float(config.clip), config.scale
    d, dev = config.vector_length, x.device
    key = crypto.rounding_key(entropy(crypto.KEY_BYTES))
    out = torch.empty(config.encoded_length, dtype=torch.int64, device=dev)
    clipped = torch.zeros((), dtype=torch.int64, device=dev)
    finite = torch.ones((), dtype=torch.bool, device=dev)
    for start in range(0, d, _CHUNK):
        block = x[start : start + _CHUNK].to(torch.float64)
        n = block.shape[0]
        # Checked once after the loop: a per-block check would sync the device.
        finite &= torch.isfinite(block).all()
        clipped += (block.abs() > clip).sum()
        v = block.clamp(-clip, clip).mul_(scale)
        # Same float64 steps as the host path (clip, scale, + u, floor), so
        # the rounding is bit-identical; u = word · 2^-32 is exact in float64.
        words = chacha20_words(key, n, device=dev, counter=start // 16)
        v.add_(words.to(torch.float64).mul_(1.0 / 2**32)).floor_()
        q = v.to(torch.int64)
        if w != 1:
            q.mul_(w)
        out[start : start + n] = ring.reduce_t(q, bits)
    if not bool(finite):
        raise InvalidInput("vector contains NaN or infinite values")
    out[d] = w
    out[d + 1] = clipped
    return DeviceQuantizedInput(values=out, weight=w, clipped=int(clipped), bits=bits)


def dequantize_tensor(total: torch.Tensor, config: SecAggConfig) -> DeviceDequantized:
    """Centred decode of a ring-sum tensor, on its device."""
    if tuple(total.shape) != (config.encoded_length,):
        raise InvalidInput("sum has the wrong length for this configuration")
    signed = ring.decode_centered_t(total, config.ring_bits)
    d = config.vector_length
    tail = signed[d:].tolist()  # two scalars: the weight and clip sums
    return DeviceDequantized(
        weighted_sum=signed[:d].to(torch.float64) / config.scale,
        total_weight=int(tail[0]),
        clipped=int(tail[1]),
    )


def from_host(
    update: QuantizedInput, device: torch.device | str
) -> DeviceQuantizedInput:
    """A host-quantised input as a device ring tensor (tests, cross-checks)."""
    values = torch.from_numpy(update.values.astype(np.int64)).to(device)
    return DeviceQuantizedInput(
        values=values, weight=update.weight, clipped=update.clipped, bits=update.bits
    )


def to_host(update: DeviceQuantizedInput) -> QuantizedInput:
    """A device-quantised input as a host ring vector (the numpy back end)."""
    values = update.values.to("cpu", torch.int64).numpy()
    return QuantizedInput(
        values=ring.from_int64(values, update.bits),
        weight=update.weight,
        clipped=update.clipped,
        bits=update.bits,
    )
