"""The one codec behind every message: a strict reader and declared fields.

A message is a frozen dataclass deriving from :class:`Message` that declares
its type byte (``KIND``) and its fields in wire order (``FIELDS``), each with
a :class:`Codec`.  Checking, encoding and decoding are written once, here:
``__post_init__`` checks every field, ``to_bytes`` writes ``version (u8) ‖
type (u8) ‖ fields``, ``from_bytes`` reads exactly that and nothing more.
Integers are little endian, lists carry a u32 count and are sorted by client
id, every length is exact.  Every failure raises
:class:`~secagg.errors.InvalidMessage`, whatever the input's type.
"""

from __future__ import annotations

import abc
import enum
import itertools
import struct
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar, cast

from secagg.config import MAX_CLIENT_ID
from secagg.errors import InvalidMessage

__all__ = [
    "CLIENT_ID",
    "U32",
    "VERSION",
    "Codec",
    "Fields",
    "Fixed",
    "Ids",
    "Int",
    "Keyed",
    "Message",
    "MessageType",
    "Reader",
    "Records",
]

VERSION = 1

T = TypeVar("T")
M = TypeVar("M", bound="Message")
#: A message's fields in wire order: (attribute name, codec).
Fields = tuple[tuple[str, "Codec[Any]"], ...]


class MessageType(enum.IntEnum):
    """The type byte that follows the version byte."""

    ADVERTISE_KEYS = 1
    KEY_DIRECTORY = 2
    SHARE_KEYS = 3
    SHARE_RELAY = 4
    MASKED_INPUT = 5
    UNMASK_REQUEST = 6
    UNMASK_RESPONSE = 7
    # Hardened mode only (secagg.signed_messages).
    SIGNED_ADVERTISE_KEYS = 8
    SIGNED_KEY_DIRECTORY = 9
    CONSISTENCY_REQUEST = 10
    CONSISTENCY_SIGNATURE = 11
    SIGNED_UNMASK_REQUEST = 12


class Reader:
    """Reads one message front to back; never past its end."""

    def __init__(self, data: object, kind: MessageType | None) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidMessage(
                "message must be bytes, bytearray or memoryview, got "
                f"{type(data).__name__}"
            )
        view = memoryview(data)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())  # one copy of a strided view
        self._view = view.cast("B") if view.ndim != 1 or view.format != "B" else view
        self._pos = 0
        if kind is not None:
            if self.u8() != VERSION:
                raise InvalidMessage("unsupported message version")
            if self.u8() != kind:
                raise InvalidMessage(f"not a {kind.name} message")

    def view(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._view):
            raise InvalidMessage("message is truncated")
        out = self._view[self._pos : self._pos + n]
        self._pos += n
        return out

    def take(self, n: int) -> bytes:
        return bytes(self.view(n))

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def count(self, width: int) -> int:
        """A list's u32 count, refused when its items cannot fit what is left."""
        count = self.u32()
        if count * width > len(self._view) - self._pos:
            raise InvalidMessage("message is truncated")
        return count

    def finish(self) -> None:
        if self._pos != len(self._view):
            raise InvalidMessage("message has trailing bytes")


class Codec(abc.ABC, Generic[T]):
    """How one field is checked, written and read; ``width`` is its least
    encoded size (it bounds list counts before any item is read)."""

    width: int = 0

    @abc.abstractmethod
    def check(self, value: object, what: str) -> None:
        """Each field type defines it."""

    @abc.abstractmethod
    def encode(self, value: T) -> bytes:
        """Each field type defines it."""

    @abc.abstractmethod
    def decode(self, r: Reader) -> T:
        """Each field type defines it."""


class Int(Codec[int]):
    """An int in ``[low, high]`` of ``width`` little-endian bytes."""

    def __init__(self, fmt: str, low: int, high: int) -> None:
        self._fmt, self.low, self.high = fmt, low, high
        self.width = struct.calcsize(fmt)

    def check(self, value: object, what: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidMessage(f"{what} must be an int")
        if not self.low <= value <= self.high:
            raise InvalidMessage(f"{what} out of range")

    def encode(self, value: int) -> bytes:
        return struct.pack(self._fmt, value)

    def decode(self, r: Reader) -> int:
        return int(struct.unpack(self._fmt, r.take(self.width))[0])


#: A u32 client id in ``[0, MAX_CLIENT_ID]``.
CLIENT_ID = Int("<I", 0, MAX_CLIENT_ID)
#: Any u32.
U32 = Int("<I", 0, 0xFFFFFFFF)


class Fixed(Codec[bytes]):
    """Exactly ``size`` bytes, optionally checked further by ``valid``."""

    def __init__(
        self, size: int, valid: Callable[[bytes], str | None] | None = None
    ) -> None:
        self.width, self._valid = size, valid

    def check(self, value: object, what: str) -> None:
        if not isinstance(value, bytes) or len(value) != self.width:
            raise InvalidMessage(f"{what} must be {self.width} bytes")
        problem = self._valid(value) if self._valid else None
        if problem:
            raise InvalidMessage(problem)

    def encode(self, value: bytes) -> bytes:
        return value

    def decode(self, r: Reader) -> bytes:
        return r.take(self.width)


def _strictly_increasing(ids: Sequence[int], what: str) -> None:
    if any(a >= b for a, b in itertools.pairwise(ids)):
        raise InvalidMessage(f"{what} list must be strictly increasing")


class Ids(Codec[tuple[int, ...]]):
    """A u32 count, then strictly increasing client ids."""

    width = 4

    def check(self, value: object, what: str) -> None:
        if not isinstance(value, tuple):
            raise InvalidMessage(f"{what} list must be a tuple")
        for i in value:
            CLIENT_ID.check(i, what)
        _strictly_increasing(value, what)

    def encode(self, value: tuple[int, ...]) -> bytes:
        return struct.pack(f"<I{len(value)}I", len(value), *value)

    def decode(self, r: Reader) -> tuple[int, ...]:
        return tuple(r.u32() for _ in range(r.count(4)))


class Keyed(Codec[tuple[tuple[int, T], ...]]):
    """A u32 count, then ``(client id, value)`` pairs by increasing id."""

    width = 4

    def __init__(self, item: Codec[T]) -> None:
        self._item = item

    def check(self, value: object, what: str) -> None:
        if not isinstance(value, tuple):
            raise InvalidMessage(f"{what} list must be a tuple")
        for pair in value:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise InvalidMessage(f"{what} entries must be (id, value) pairs")
            CLIENT_ID.check(pair[0], what)
            self._item.check(pair[1], f"{what} value")
        _strictly_increasing([i for i, _ in value], what)

    def encode(self, value: tuple[tuple[int, T], ...]) -> bytes:
        parts = [struct.pack("<I", len(value))]
        parts.extend(struct.pack("<I", i) + self._item.encode(v) for i, v in value)
        return b"".join(parts)

    def decode(self, r: Reader) -> tuple[tuple[int, T], ...]:
        count = r.count(4 + self._item.width)
        return tuple((r.u32(), self._item.decode(r)) for _ in range(count))


class Records(Codec[tuple[M, ...]]):
    """A u32 count, then records of ``kind`` by strictly increasing ``client_id``."""

    width = 4

    def __init__(self, kind: type[M]) -> None:
        self._kind = kind
        self._item_width = sum(c.width for _, c in kind.FIELDS)

    def check(self, value: object, what: str) -> None:
        if not isinstance(value, tuple) or not all(
            isinstance(e, self._kind) for e in value
        ):
            raise InvalidMessage(f"{what} must be a tuple of {self._kind.__name__}")
        _strictly_increasing([e.client_id for e in value], "client id")

    def encode(self, value: tuple[M, ...]) -> bytes:
        parts = [struct.pack("<I", len(value))]
        parts.extend(e.to_bytes() for e in value)
        return b"".join(parts)

    def decode(self, r: Reader) -> tuple[M, ...]:
        count = r.count(self._item_width)
        return tuple(self._kind.read(r) for _ in range(count))


class Message:
    """Base of every wire message (see the module docstring).

    ``KIND = None`` marks a record without a header: an entry inside a list,
    or a plaintext sealed inside a ciphertext.
    """

    __slots__ = ()
    KIND: ClassVar[MessageType | None] = None
    FIELDS: ClassVar[Fields] = ()

    def __post_init__(self) -> None:
        for name, codec in self.FIELDS:
            codec.check(getattr(self, name), name)

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        head = b"" if self.KIND is None else struct.pack("<BB", VERSION, self.KIND)
        body = (codec.encode(getattr(self, name)) for name, codec in self.FIELDS)
        return head + b"".join(body)

    @classmethod
    def read(cls: type[M], r: Reader) -> M:
        """Read this message's fields from ``r`` (no header, no end check)."""
        make: Any = cls  # the dataclass __init__ takes the declared fields
        return cast(M, make(**{name: codec.decode(r) for name, codec in cls.FIELDS}))

    @classmethod
    def from_bytes(cls: type[M], data: bytes) -> M:
        """Decode; :class:`InvalidMessage` on any malformation or input type."""
        r = Reader(data, cls.KIND)
        out = cls.read(r)
        r.finish()
        return out
