"""The ``TORCH`` ring back end: int64 lanes on any torch device.

A ring vector is a 1-D int64 tensor holding ``[0, 2^k)`` with an explicit
``& (2^k - 1)`` after every operation, since torch's ``uint32`` lacks add and
shifts.  With ``k <= MAX_RING_BITS`` a sum or difference of two reduced
lanes never overflows int64, and ``&`` of a negative int64 is its residue
mod 2^k (two's complement), so results are bit-identical to
:class:`secagg.ring_numpy.NumpyRing`.

Quantisation, masking and summation stay on the device: the only
device-to-host copy of a client is its masked vector's wire payload, and a
server decodes each payload onto the device once.  On a CPU device this is
the same code, so CI cross-checks it bit for bit against ``NUMPY``.

>>> t = TorchRing(12).from_signed(torch.tensor([-1, 5]))
>>> t.tolist(), bytes(TorchRing(12).to_wire(t)).hex()
([4095, 5], 'ff0f0500')
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch

from secagg import prg_torch
from secagg.errors import InvalidInput
from secagg.ring import (
    FloatVector,
    Ring,
    RingArray,
    RingBackend,
    RingVector,
    container_dtype,
    modulus_mask,
    wire_width,
)

__all__ = ["MaskSum", "TorchRing"]

#: ``signed_mask_sum(keys, signs, length, bits, device, *, out, chunk_elems)``
#: of :mod:`secagg.prg_torch` or :mod:`secagg.prg_triton`.
MaskSum = Callable[..., torch.Tensor]

# Coordinates per rounding block: a multiple of 16 words so each block starts
# on a ChaCha20 block boundary; bounds the eager keystream's scratch memory.
_CHUNK = 1 << 20


class TorchRing(Ring[torch.Tensor]):
    """Z_2^bits as int64 lanes on ``device`` (see the module docstring).

    ``mask_sum`` computes masks (:func:`secagg.backend.select_ring` passes
    the fused kernel where it runs); ``chunk_elems`` caps the (key, element)
    pairs of one eager mask batch.
    """

    backend = RingBackend.TORCH

    def __init__(
        self,
        bits: int,
        device: torch.device | str = "cpu",
        *,
        mask_sum: MaskSum = prg_torch.signed_mask_sum,
        chunk_elems: int | None = None,
    ) -> None:
        super().__init__(bits, device)
        if sys.byteorder != "little":  # pragma: no cover - no such host in use
            raise InvalidInput("the torch ring reads int64 lanes as LE bytes")
        self._mask_sum = mask_sum
        self._chunk = chunk_elems

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x.bitwise_and_(modulus_mask(self.bits))

    def zeros(self, length: int) -> torch.Tensor:
        return torch.zeros(length, dtype=torch.int64, device=self.device)

    def adopt(self, values: RingVector) -> torch.Tensor:
        if isinstance(values, torch.Tensor):
            return values.to(self.device, torch.int64)  # a no-op when there
        return torch.from_numpy(values.astype(np.int64)).to(self.device)

    def from_signed(self, values: npt.NDArray[np.int64] | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(values)
        return self._reduce(t.to(self.device, torch.int64, copy=True))

    def centered(self, x: torch.Tensor) -> torch.Tensor:
        v = self._reduce(x.clone())
        return torch.where(v >= (1 << (self.bits - 1)), v - (1 << self.bits), v)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._reduce(a + b)

    def sub(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._reduce(a - b)

    def add_(self, acc: torch.Tensor, x: torch.Tensor) -> None:
        self._reduce(acc.add_(x))

    def masked(
        self, x: torch.Tensor, keys: Sequence[bytes], signs: Sequence[int]
    ) -> torch.Tensor:
        masks = self._mask_sum(
            keys, signs, x.shape[0], self.bits, x.device, chunk_elems=self._chunk
        )
        return self._reduce(masks.add_(x))

    def to_wire(self, x: torch.Tensor) -> memoryview:
        # The low wire_width(bits) bytes of each lane are cut out on the
        # device, so the one device-to-host copy is the wire payload itself.
        width = wire_width(self.bits)
        lanes = x.to(torch.int64).contiguous().view(torch.uint8).reshape(-1, 8)
        payload = lanes if width == 8 else lanes[:, :width]
        host = payload.contiguous().to("cpu")
        return host.numpy().reshape(-1).data.cast("B")

    def from_wire(self, payload: bytes | memoryview, length: int) -> torch.Tensor:
        width = wire_width(self.bits)
        # One host copy into a writable buffer (torch refuses read-only
        # memory), then one host-to-device copy.
        raw = torch.empty(length * width, dtype=torch.uint8)
        raw.numpy()[:] = np.frombuffer(payload, dtype=np.uint8, count=length * width)
        dev = raw.to(self.device).reshape(length, width)
        if width == 8:
            return dev.view(torch.int64).reshape(length)
        padded = torch.zeros((length, 8), dtype=torch.uint8, device=dev.device)
        padded[:, :width] = dev
        return padded.view(torch.int64).reshape(length)

    def to_host(self, x: torch.Tensor) -> RingArray:
        return x.to("cpu", torch.int64).numpy().astype(container_dtype(self.bits))

    def quantize(
        self, x: FloatVector, weight: int, key: bytes, clip: float, scale: float
    ) -> tuple[torch.Tensor, int]:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        t = x.detach().to(self.device)
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)  # as the NUMPY back end does for halves
        d, dev = t.shape[0], self.device
        out = torch.empty(d + 2, dtype=torch.int64, device=dev)
        clipped = torch.zeros((), dtype=torch.int64, device=dev)
        finite = torch.ones((), dtype=torch.bool, device=dev)
        for start in range(0, d, _CHUNK):
            block = t[start : start + _CHUNK].to(torch.float64)
            # Checked once after the loop: a per-block check would sync.
            finite &= torch.isfinite(block).all()
            clipped += (block.abs() > clip).sum()
            v = block.clamp(-clip, clip).mul_(scale)
            # The NUMPY back end's float64 steps (clip, scale, + u, floor), so
            # the rounding is bit-identical; u = word · 2^-32 is exact.
            words = prg_torch.chacha20_words(
                key, block.shape[0], device=dev, counter=start // 16
            )
            v.add_(words.to(torch.float64).mul_(1.0 / 2**32)).floor_()
            q = v.to(torch.int64)
            if weight != 1:
                q.mul_(weight)
            out[start : start + block.shape[0]] = self._reduce(q)
        if not bool(finite):
            raise InvalidInput("vector contains NaN or infinite values")
        out[d] = weight
        out[d + 1] = clipped
        return out, int(clipped)
