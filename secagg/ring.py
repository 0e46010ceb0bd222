"""All arithmetic in the ring Z_2^k, and nothing else.

A ring vector is a 1-D numpy array in a *container* dtype: ``uint32`` for
``k <= 32`` and ``uint64`` for ``32 < k <= MAX_RING_BITS``.  numpy's unsigned
integers wrap modulo 2^32 or 2^64; since 2^k divides both, any sequence of additions and
subtractions in the container, reduced once with ``& (2^k - 1)``, is exact in
Z_2^k.  So adds stay free of masking in hot loops and :func:`reduce` runs once
at the end.

Wire format: each coordinate is ``ceil(k/8)`` little-endian bytes; for ``k`` not
a multiple of 8 the unused high bits must be zero (a decoder refuses anything
else).  ``k = 32`` therefore uploads exactly 4 bytes per coordinate.

The ``*_t`` helpers are the same ring on torch tensors (the device path):
int64 lanes holding ``[0, 2^k)`` with an explicit ``& (2^k - 1)`` after every
operation, since torch's ``uint32`` lacks add and shifts.  With k <= MAX_RING_BITS a sum
or difference of two reduced lanes never overflows int64, and ``&`` of a
negative int64 is its residue mod 2^k (two's complement), so results are
bit-identical to the numpy containers.

>>> v = encode_signed(np.array([-1, 2], dtype=np.int64), 16)
>>> decode_centered(add(v, v, 16), 16).tolist()
[-2, 4]
>>> t = encode_signed_t(torch.tensor([-1, 2]), 16)
>>> bytes(to_wire_t(t, 16)) == bytes(to_wire(v, 16))
True
"""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt
import torch

__all__ = [
    "MAX_RING_BITS",
    "MIN_RING_BITS",
    "RingArray",
    "add",
    "add_t",
    "container_dtype",
    "decode_centered",
    "decode_centered_t",
    "encode_signed",
    "encode_signed_t",
    "from_int64",
    "from_wire",
    "from_wire_t",
    "modulus_mask",
    "neg_t",
    "reduce",
    "reduce_t",
    "sub",
    "sub_t",
    "to_wire",
    "to_wire_t",
    "wire_width",
    "zeros",
]

#: Narrowest ring the protocol accepts.
MIN_RING_BITS = 8
#: Widest ring Z_2^k: an int64 lane holds two reduced values' sum or
#: difference without overflow, and uint64 containers hold every residue.
MAX_RING_BITS = 62

RingArray = npt.NDArray[np.unsignedinteger]


def container_dtype(bits: int) -> np.dtype[np.unsignedinteger]:
    """The little-endian unsigned container for a ring of ``bits`` bits."""
    return np.dtype("<u4") if bits <= 32 else np.dtype("<u8")


def modulus_mask(bits: int) -> int:
    """``2^bits - 1``: the mask that reduces a container value into the ring."""
    return (1 << bits) - 1


def wire_width(bits: int) -> int:
    """Bytes per coordinate on the wire: ``ceil(bits / 8)``."""
    return (bits + 7) // 8


def zeros(length: int, bits: int) -> RingArray:
    """A fresh zero vector of the ring."""
    return np.zeros(length, dtype=container_dtype(bits))


def reduce(x: RingArray, bits: int) -> RingArray:
    """Reduce ``x`` into ``[0, 2^bits)`` in place and return it."""
    if bits not in (32, 64):
        np.bitwise_and(x, x.dtype.type(modulus_mask(bits)), out=x)
    return x


def add(a: RingArray, b: RingArray, bits: int) -> RingArray:
    """``a + b`` in Z_2^bits (a new, reduced array)."""
    return reduce(np.add(a, b), bits)


def sub(a: RingArray, b: RingArray, bits: int) -> RingArray:
    """``a - b`` in Z_2^bits (a new, reduced array)."""
    return reduce(np.subtract(a, b), bits)


def encode_signed(values: npt.NDArray[np.int64], bits: int) -> RingArray:
    """Centred (two's-complement) encoding of signed integers into the ring."""
    # numpy casts int64 to an unsigned container modulo 2^32 or 2^64 (C
    # conversion rules), so masking afterwards keeps the residue mod 2^bits.
    out = values.astype(container_dtype(bits))
    return reduce(out, bits)


def decode_centered(x: RingArray, bits: int) -> npt.NDArray[np.int64]:
    """Centred lift: ``[0, 2^bits)`` onto ``[-2^(bits-1), 2^(bits-1))``."""
    v = reduce(x.copy(), bits).astype(np.int64)
    v[v >= (1 << (bits - 1))] -= 1 << bits
    return v


def from_int64(values: npt.NDArray[np.int64], bits: int) -> RingArray:
    """Ring vector from int64 residues already in ``[0, 2^bits)`` (device path)."""
    return encode_signed(values, bits)


def to_wire(x: RingArray, bits: int) -> bytes | memoryview:
    """Serialise a reduced ring vector as ``wire_width(bits)`` LE bytes each.

    For 25 <= k <= 32 and k >= 57 this is a zero-copy view of ``x``; join it
    into the message once rather than copying twice.
    """
    width = wire_width(bits)
    arr = np.ascontiguousarray(x, dtype=container_dtype(bits))
    if width == arr.dtype.itemsize:
        return arr.data.cast("B")
    return arr.view(np.uint8).reshape(-1, arr.dtype.itemsize)[:, :width].tobytes()


def from_wire(data: bytes | memoryview, length: int, bits: int) -> RingArray:
    """Parse :func:`to_wire` output; raise ``ValueError`` on any deviation."""
    width = wire_width(bits)
    if len(data) != length * width:
        raise ValueError("ring vector has the wrong length")
    dtype = container_dtype(bits)
    if width == dtype.itemsize:
        out = np.frombuffer(data, dtype=dtype).copy()
    else:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(length, width)
        padded = np.zeros((length, dtype.itemsize), dtype=np.uint8)
        padded[:, :width] = raw
        out = padded.view(dtype).reshape(length)
    if bits % 8 and np.any(out >> dtype.type(bits)):
        raise ValueError("ring coordinate exceeds 2^bits")
    return out


# torch ring (device path) ----------------------------------------------------


def reduce_t(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Reduce an int64 tensor into ``[0, 2^bits)`` in place and return it."""
    return x.bitwise_and_(modulus_mask(bits))


def add_t(a: torch.Tensor, b: torch.Tensor, bits: int) -> torch.Tensor:
    """``a + b`` in Z_2^bits for reduced int64 tensors (a new tensor)."""
    return reduce_t(a + b, bits)


def sub_t(a: torch.Tensor, b: torch.Tensor, bits: int) -> torch.Tensor:
    """``a - b`` in Z_2^bits for reduced int64 tensors (a new tensor)."""
    return reduce_t(a - b, bits)


def neg_t(a: torch.Tensor, bits: int) -> torch.Tensor:
    """``-a`` in Z_2^bits (a new tensor)."""
    return reduce_t(-a, bits)


def encode_signed_t(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Centred encoding of signed int64 values into the ring (a new tensor)."""
    return reduce_t(values.to(torch.int64, copy=True), bits)


def decode_centered_t(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Centred lift of a ring tensor onto ``[-2^(bits-1), 2^(bits-1))``."""
    v = reduce_t(x.clone(), bits)
    return torch.where(v >= (1 << (bits - 1)), v - (1 << bits), v)


def _check_little_endian() -> None:
    # The byte views below read int64 lanes as their in-memory bytes.
    if sys.byteorder != "little":  # pragma: no cover - no such host in use
        raise RuntimeError("the torch ring path needs a little-endian host")


def to_wire_t(x: torch.Tensor, bits: int) -> memoryview:
    """Serialise a reduced int64 ring tensor exactly as :func:`to_wire` does.

    The low ``wire_width(bits)`` bytes of each lane are cut out on the tensor's
    device, so the single device-to-host copy is the wire payload itself.
    """
    _check_little_endian()
    width = wire_width(bits)
    lanes = x.to(torch.int64).contiguous().view(torch.uint8).reshape(-1, 8)
    payload = lanes if width == 8 else lanes[:, :width]
    host = payload.contiguous().to("cpu")
    return host.numpy().reshape(-1).data.cast("B")


def from_wire_t(
    data: bytes | memoryview, length: int, bits: int, device: torch.device | str
) -> torch.Tensor:
    """Parse wire bytes into an int64 ring tensor on ``device`` (one upload).

    Raises ``ValueError`` on a wrong length or a coordinate >= 2^bits, as
    :func:`from_wire` does.
    """
    _check_little_endian()
    width = wire_width(bits)
    if len(data) != length * width:
        raise ValueError("ring vector has the wrong length")
    # One host copy into a writable buffer (torch refuses read-only memory),
    # then one host-to-device copy.
    raw = torch.empty(length * width, dtype=torch.uint8)
    raw.numpy()[:] = np.frombuffer(data, dtype=np.uint8)
    dev = raw.to(device).reshape(length, width)
    if width == 8:
        out = dev.view(torch.int64).reshape(length)
    else:
        padded = torch.zeros((length, 8), dtype=torch.uint8, device=dev.device)
        padded[:, :width] = dev
        out = padded.view(torch.int64).reshape(length)
    # A negative lane (bit 63 set) also fails: its arithmetic shift is non-zero.
    if bits % 8 and bool((out >> bits).any()):
        raise ValueError("ring coordinate exceeds 2^bits")
    return out
