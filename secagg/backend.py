"""The one place a ring back end (and its mask kernel) is chosen.

``RingBackend.NUMPY`` is the default on the CPU, ``RingBackend.TORCH`` on any
other device; either can be asked for explicitly.  On a CUDA device the torch
back end computes masks with the fused Triton kernel
(:mod:`secagg.prg_triton`) when Triton is importable, and with ChaCha20 in
eager torch ops (:mod:`secagg.prg_torch`) otherwise.  The results are
bit-identical on every choice.

>>> select_ring(32).backend
<RingBackend.NUMPY: 'numpy'>
>>> select_ring(32, backend=RingBackend.TORCH).backend
<RingBackend.TORCH: 'torch'>
"""

from __future__ import annotations

from typing import Any

import torch

from secagg import prg_torch
from secagg.errors import ConfigError
from secagg.ring import Ring, RingBackend
from secagg.ring_numpy import NumpyRing
from secagg.ring_torch import MaskSum, TorchRing

__all__ = ["mask_sum_for", "resolve_backend", "select_ring", "to_device"]


def to_device(device: object) -> torch.device:
    """``device`` as a :class:`torch.device`; :class:`ConfigError` if it is none."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise ConfigError(f"device must be a torch.device or str, got {device!r}")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}: {exc}") from None


def resolve_backend(
    device: torch.device | str, backend: RingBackend | None
) -> RingBackend:
    """``backend`` as given, or by device: ``NUMPY`` on CPU, ``TORCH`` elsewhere."""
    if backend is None:
        cpu = to_device(device).type == "cpu"
        return RingBackend.NUMPY if cpu else RingBackend.TORCH
    if not isinstance(backend, RingBackend):
        raise ConfigError(f"backend must be a RingBackend, got {backend!r}")
    return backend


def mask_sum_for(device: torch.device | str) -> MaskSum:
    """The mask kernel of the torch back end on ``device``: fused Triton on
    CUDA where Triton is importable, eager torch ops otherwise."""
    if to_device(device).type == "cuda":
        # Imported here so that importing secagg never imports Triton.
        from secagg import prg_triton

        if prg_triton.triton_available():
            return prg_triton.signed_mask_sum_triton
    return prg_torch.signed_mask_sum


def select_ring(
    bits: int,
    device: torch.device | str = "cpu",
    backend: RingBackend | None = None,
    *,
    chunk_elems: int | None = None,
) -> Ring[Any]:
    """The ring Z_2^bits on ``device`` with the back end :func:`resolve_backend`
    picks; ``chunk_elems`` caps the (key, element) pairs of one eager torch
    mask batch (ignored by ``NUMPY`` and the fused kernel)."""
    dev = to_device(device)
    if resolve_backend(dev, backend) is RingBackend.NUMPY:
        return NumpyRing(bits, dev)
    return TorchRing(bits, dev, mask_sum=mask_sum_for(dev), chunk_elems=chunk_elems)
