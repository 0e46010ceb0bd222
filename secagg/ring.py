"""The ring Z_2^k and the one interface its back ends implement.

Every protocol step that touches ring vectors (quantising, masking, folding
masked inputs into the sum, unmasking, decoding) goes through a :class:`Ring`
bound to one width ``k`` and one device.  Two back ends implement it, and
:func:`secagg.backend.select_ring` is the one place that picks one:

* ``RingBackend.NUMPY`` (:mod:`secagg.ring_numpy`): ``uint32``/``uint64``
  containers on the host, masks from pyca's ChaCha20;
* ``RingBackend.TORCH`` (:mod:`secagg.ring_torch`): int64 lanes on any torch
  device, masks from ChaCha20 in torch ops or the fused Triton kernel.

Both give bit-identical vectors and the same wire bytes for the same inputs
and entropy, so parties on different back ends complete sessions together.

Wire format of a ring vector (framed by
:class:`secagg.messages.MaskedInput`): each coordinate is ``ceil(k/8)``
little-endian bytes; for ``k`` not a multiple of 8 the unused high bits are
zero.  ``k = 32`` therefore uploads exactly 4 bytes per coordinate.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import numpy.typing as npt
import torch

from secagg.errors import InvalidInput
from secagg.limits import MAX_RING_BITS, MIN_RING_BITS

__all__ = [
    "MAX_RING_BITS",
    "MIN_RING_BITS",
    "FloatVector",
    "Ring",
    "RingArray",
    "RingBackend",
    "RingVector",
    "check_bits",
    "container_dtype",
    "modulus_mask",
    "wire_width",
]


#: A ring vector of the ``NUMPY`` back end: a 1-D uint32/uint64 container.
RingArray = npt.NDArray[np.unsignedinteger[Any]]
#: A ring vector of either back end (``TORCH``: a 1-D int64 tensor).
RingVector = RingArray | torch.Tensor
#: A float vector as a caller hands it in.
FloatVector = npt.NDArray[np.floating[Any]] | torch.Tensor

V = TypeVar("V", RingArray, torch.Tensor)


class RingBackend(enum.Enum):
    """Where ring arithmetic runs (see the module docstring)."""

    NUMPY = "numpy"
    TORCH = "torch"


def check_bits(bits: object, low: int = MIN_RING_BITS) -> int:
    """``bits`` as a ring width in ``[low, MAX_RING_BITS]``, else InvalidInput."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise InvalidInput(f"ring bits must be an int, got {type(bits).__name__}")
    if not low <= bits <= MAX_RING_BITS:
        raise InvalidInput(f"ring bits must be in [{low}, {MAX_RING_BITS}], got {bits}")
    return bits


def container_dtype(bits: int) -> np.dtype[Any]:
    """The little-endian unsigned host container of a ring of ``bits`` bits:
    uint32 up to 32 bits, uint64 above (both wrap modulo a multiple of 2^k)."""
    return np.dtype("<u4") if bits <= 32 else np.dtype("<u8")


def modulus_mask(bits: int) -> int:
    """``2^bits - 1``: the mask that reduces a value into the ring."""
    return (1 << bits) - 1


def wire_width(bits: int) -> int:
    """Bytes per coordinate on the wire: ``ceil(bits / 8)``."""
    return (bits + 7) // 8


class Ring(abc.ABC, Generic[V]):
    """Z_2^bits on one device: every ring operation the protocol needs.

    Vectors are 1-D and *reduced* (every coordinate in ``[0, 2^bits)``)
    between operations; every method returns reduced vectors.
    """

    backend: ClassVar[RingBackend]

    def __init__(self, bits: int, device: torch.device | str = "cpu") -> None:
        self.bits = check_bits(bits)
        self.device = torch.device(device)

    @abc.abstractmethod
    def zeros(self, length: int) -> V:
        """A fresh zero vector."""

    @abc.abstractmethod
    def adopt(self, values: RingVector) -> V:
        """A reduced vector of either back end, as this ring's vector type on
        this ring's device (shared, not copied, when it already is)."""

    @abc.abstractmethod
    def from_signed(self, values: npt.NDArray[np.int64] | torch.Tensor) -> V:
        """Two's-complement residues of signed int64 values (a new vector)."""

    @abc.abstractmethod
    def centered(self, x: V) -> torch.Tensor:
        """Centred lift onto ``[-2^(bits-1), 2^(bits-1))`` as an int64 tensor
        on this ring's device."""

    @abc.abstractmethod
    def add(self, a: V, b: V) -> V:
        """``a + b`` (a new vector)."""

    @abc.abstractmethod
    def sub(self, a: V, b: V) -> V:
        """``a - b`` (a new vector)."""

    @abc.abstractmethod
    def add_(self, acc: V, x: V) -> None:
        """``acc += x`` in place."""

    @abc.abstractmethod
    def masked(self, x: V, keys: Sequence[bytes], signs: Sequence[int]) -> V:
        """``x + Σ_i signs[i] · PRG(keys[i])`` (a new vector; see
        :mod:`secagg.prg` for the PRG layout)."""

    @abc.abstractmethod
    def to_wire(self, x: V) -> bytes | memoryview:
        """The wire payload of ``x`` (``wire_width(bits)`` bytes a value)."""

    @abc.abstractmethod
    def from_wire(self, payload: bytes | memoryview, length: int) -> V:
        """Inverse of :meth:`to_wire` for a payload that
        :class:`~secagg.messages.MaskedInput` has already validated."""

    @abc.abstractmethod
    def to_host(self, x: V) -> RingArray:
        """``x`` as a host container array (the NUMPY form)."""

    @abc.abstractmethod
    def quantize(
        self, x: FloatVector, weight: int, key: bytes, clip: float, scale: float
    ) -> tuple[V, int]:
        """``[w·q(x_1), …, w·q(x_d), w, clipped]`` and the clip count.

        ``q(v) = floor(clip(v, -c, c) · scale + u_i)`` with ``u_i`` word ``i``
        of the ChaCha20 keystream of ``key`` times 2^-32 (stochastic
        rounding).  Raises :class:`InvalidInput` for NaN or infinite values.
        """
