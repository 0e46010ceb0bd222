"""The ``NUMPY`` ring back end: host containers and pyca's ChaCha20.

A ring vector is a 1-D numpy array in a *container* dtype: ``uint32`` for
``k <= 32`` and ``uint64`` above.  numpy's unsigned integers wrap modulo 2^32
or 2^64; since 2^k divides both, any sequence of additions and subtractions in
the container, reduced once with ``& (2^k - 1)``, is exact in Z_2^k.

>>> r = NumpyRing(16)
>>> v = r.from_signed(np.array([-1, 2], dtype=np.int64))
>>> r.centered(r.add(v, v)).tolist()
[-2, 4]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from secagg import prg
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

__all__ = ["NumpyRing"]

_CHUNK = 1 << 16  # coordinates per rounding block: 256 KiB of keystream


class NumpyRing(Ring[RingArray]):
    """Z_2^bits in host containers (see the module docstring)."""

    backend = RingBackend.NUMPY

    def __init__(self, bits: int, device: torch.device | str = "cpu") -> None:
        super().__init__(bits, device)
        self.dtype = container_dtype(self.bits)

    def _reduce(self, x: RingArray) -> RingArray:
        if self.bits not in (32, 64):
            np.bitwise_and(x, x.dtype.type(modulus_mask(self.bits)), out=x)
        return x

    def zeros(self, length: int) -> RingArray:
        return np.zeros(length, dtype=self.dtype)

    def adopt(self, values: RingVector) -> RingArray:
        if isinstance(values, torch.Tensor):
            lanes = values.detach().to("cpu", torch.int64).numpy()
            return self.from_signed(lanes)
        if values.dtype != self.dtype:
            return self._reduce(values.astype(self.dtype))
        return values

    def from_signed(self, values: npt.NDArray[np.int64] | torch.Tensor) -> RingArray:
        if isinstance(values, torch.Tensor):
            values = values.detach().to("cpu", torch.int64).numpy()
        # numpy casts int64 to an unsigned container modulo 2^32 or 2^64 (C
        # conversion rules), so masking afterwards keeps the residue mod 2^k.
        return self._reduce(np.asarray(values).astype(self.dtype))

    def centered(self, x: RingArray) -> torch.Tensor:
        v = self._reduce(x.copy()).astype(np.int64)
        v[v >= (1 << (self.bits - 1))] -= 1 << self.bits
        return torch.from_numpy(v)

    def add(self, a: RingArray, b: RingArray) -> RingArray:
        return self._reduce(np.add(a, b))

    def sub(self, a: RingArray, b: RingArray) -> RingArray:
        return self._reduce(np.subtract(a, b))

    def add_(self, acc: RingArray, x: RingArray) -> None:
        self._reduce(np.add(acc, x, out=acc))

    def masked(
        self, x: RingArray, keys: Sequence[bytes], signs: Sequence[int]
    ) -> RingArray:
        # Masks are added straight into a copy: no mask vector is materialised.
        return prg.signed_mask_sum_into(x.copy(), keys, signs, self.bits)

    def to_wire(self, x: RingArray) -> bytes | memoryview:
        # For 25 <= k <= 32 and k >= 57 a zero-copy view of ``x``.
        width = wire_width(self.bits)
        arr = np.ascontiguousarray(x, dtype=self.dtype)
        if width == arr.dtype.itemsize:
            return arr.data.cast("B")
        return arr.view(np.uint8).reshape(-1, arr.dtype.itemsize)[:, :width].tobytes()

    def from_wire(self, payload: bytes | memoryview, length: int) -> RingArray:
        width = wire_width(self.bits)
        if width == self.dtype.itemsize:
            return np.frombuffer(payload, dtype=self.dtype, count=length).copy()
        raw = np.frombuffer(payload, dtype=np.uint8, count=length * width)
        padded = np.zeros((length, self.dtype.itemsize), dtype=np.uint8)
        padded[:, :width] = raw.reshape(length, width)
        return padded.view(self.dtype).reshape(length)

    def to_host(self, x: RingArray) -> RingArray:
        return x

    def quantize(
        self, x: FloatVector, weight: int, key: bytes, clip: float, scale: float
    ) -> tuple[RingArray, int]:
        if isinstance(x, torch.Tensor):
            t = x.detach().to("cpu")
            x = (t if t.dtype in (torch.float32, torch.float64) else t.float()).numpy()
        # Blocks are widened to float64 one at a time: no full-size copy.
        d = x.shape[0]
        out = self.zeros(d + 2)
        stream = prg.Keystream(key)
        clipped = 0
        for start in range(0, d, _CHUNK):
            block = np.asarray(x[start : start + _CHUNK], dtype=np.float64)
            if not np.isfinite(block).all():
                raise InvalidInput("vector contains NaN or infinite values")
            clipped += int(np.count_nonzero(np.abs(block) > clip))
            v = np.clip(block, -clip, clip)
            v *= scale
            # floor(v + u), u uniform on a 2^-32 grid in [0, 1), rounds up
            # with probability frac(v).  float64 resolves u fully while
            # value_bits <= 21, and to 2^(value_bits - 53) beyond that.
            v += stream.words(block.shape[0]) * (1.0 / 2**32)
            np.floor(v, out=v)
            q = v.astype(np.int64)
            if weight != 1:
                q *= weight
            out[start : start + block.shape[0]] = self.from_signed(q)
        out[d] = weight
        out[d + 1] = clipped
        return out, clipped
