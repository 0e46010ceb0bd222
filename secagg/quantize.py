"""Float vector ↔ ring: clip, scale, stochastic rounding, secret weight.

A client's float vector ``x`` (length d) and integer weight ``w`` become one
ring vector of length d + 2::

    [ w · q(x_1), …, w · q(x_d), w, clipped ]

where ``q(v) = round_stochastic(clip(v, -c, c) · scale)`` and ``clipped`` is
how many coordinates fell outside ``[-c, c]``.  All three travel under the
same masks, so the server learns only Σ w·q(x), Σ w and the total clip count.
Rounding bits come from a ChaCha20 keystream under a key derived from the OS
CSPRNG, never from torch's or numpy's generators.  Stochastic rounding is
unbiased and off by less than one step, so each decoded coordinate of the sum
lies within ``Σ w / scale`` of the exact weighted sum of the clipped inputs.

The ring back end (:func:`secagg.backend.select_ring`) decides where this
runs; both give the same ring vector for the same entropy.

>>> cfg = SecAggConfig(num_clients=2, threshold=2, vector_length=2, max_weight=7)
>>> q = quantize_input(np.array([0.5, -2.0]), 3, cfg)
>>> q.clipped, int(q.values[2])
(1, 3)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from secagg import crypto
from secagg.backend import select_ring, to_device
from secagg.config import SecAggConfig
from secagg.errors import InvalidInput
from secagg.ring import FloatVector, Ring, RingBackend, RingVector

__all__ = [
    "Dequantized",
    "QuantizedInput",
    "check_weight",
    "dequantize",
    "quantize_input",
]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class QuantizedInput:
    """One client's encoded vector; it never leaves the client unmasked.

    ``values`` is the ring vector of the back end that made it (a host
    container or an int64 tensor on its device); any ring adopts it.
    """

    values: RingVector
    weight: int
    clipped: int
    bits: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Dequantized:
    """The decoded secure sum; ``weighted_sum`` is float64 on the sum's device."""

    weighted_sum: torch.Tensor
    total_weight: int
    clipped: int


def check_weight(weight: object, config: SecAggConfig) -> int:
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


_NATIVE_FLOATS = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64))


def _tensor_vector(t: torch.Tensor) -> torch.Tensor:
    if t.layout is not torch.strided:
        raise InvalidInput(f"vector must be a dense tensor, got layout {t.layout}")
    if t.device.type == "meta":
        raise InvalidInput("vector is a meta tensor: it holds no values")
    if not t.is_floating_point():
        raise InvalidInput(f"vector must be a float tensor, got {t.dtype}")
    return t.detach()


def float_vector(vector: object, length: int) -> FloatVector:
    """``vector`` as a 1-D real float array or dense tensor of ``length``.

    Accepts a torch tensor, a numpy array or anything numpy reads as a real
    float array; :class:`InvalidInput` (naming what would be accepted) for
    everything else.
    """
    if isinstance(vector, torch.Tensor):
        x: Any = _tensor_vector(vector)
    else:
        try:
            x = np.asarray(vector)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                f"vector must be a float tensor or array, got {type(vector).__name__}"
            ) from exc
        if x.dtype.kind != "f":
            what = x.dtype if isinstance(vector, np.ndarray) else type(vector).__name__
            raise InvalidInput(f"vector must be floating point, got {what}")
        if x.dtype not in _NATIVE_FLOATS:  # byte-swapped or extended precision
            x = x.astype(np.float64)
    if x.ndim != 1 or x.shape[0] != length:
        raise InvalidInput(
            f"vector must be 1-D of length {length}, got shape {tuple(x.shape)}"
        )
    return x  # type: ignore[no-any-return]


def quantize_input(
    vector: FloatVector,
    weight: int,
    config: SecAggConfig,
    *,
    entropy: Callable[[int], bytes] = os.urandom,
    device: torch.device | str | None = None,
    backend: RingBackend | None = None,
) -> QuantizedInput:
    """Clip, scale and stochastically round ``vector``; multiply by ``weight``.

    Runs on the ring :func:`~secagg.backend.select_ring` picks for ``device``
    (by default the vector's own) and ``backend``.  Raises :class:`InvalidInput` for a
    vector that is not a 1-D real float vector of ``config.vector_length``
    finite values, or a ``weight`` below 1 or above ``config.max_weight``.
    """
    if not isinstance(config, SecAggConfig):
        raise InvalidInput(f"config must be a SecAggConfig, got {config!r}")
    x = float_vector(vector, config.vector_length)
    w = check_weight(weight, config)
    home = x.device if isinstance(x, torch.Tensor) else "cpu"
    ring = select_ring(config.ring_bits, to_device(device or home), backend)
    key = crypto.rounding_key(entropy(crypto.KEY_BYTES))
    values, clipped = ring.quantize(x, w, key, float(config.clip), config.scale)
    return QuantizedInput(values=values, weight=w, clipped=clipped, bits=ring.bits)


def dequantize(ring: Ring[Any], total: RingVector, config: SecAggConfig) -> Dequantized:
    """Centred decode of a ring sum into Σ w·x, Σ w and the clip count."""
    if tuple(total.shape) != (config.encoded_length,):
        raise InvalidInput("sum has the wrong length for this configuration")
    signed = ring.centered(ring.adopt(total))
    d = config.vector_length
    tail = signed[d:].tolist()  # two scalars: the weight and clip sums
    return Dequantized(
        weighted_sum=signed[:d].to(torch.float64) / config.scale,
        total_weight=int(tail[0]),
        clipped=int(tail[1]),
    )
