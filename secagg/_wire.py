"""Framing helpers for :mod:`secagg.messages`: a strict reader and field checks.

Every failure here raises :class:`~secagg.errors.InvalidMessage`.
"""

from __future__ import annotations

import enum
import itertools
import struct
from collections.abc import Callable, Sequence
from typing import TypeVar

from secagg.config import MAX_CLIENT_ID
from secagg.errors import InvalidMessage

__all__ = [
    "VERSION",
    "MessageType",
    "Reader",
    "check_bytes",
    "check_id",
    "check_sorted",
    "header",
]

VERSION = 1

T = TypeVar("T")


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
    def __init__(self, data: bytes, kind: MessageType) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidMessage("message must be bytes")
        self._view = memoryview(data).cast("B")
        self._pos = 0
        if self.u8() != VERSION:
            raise InvalidMessage("unsupported message version")
        if self.u8() != kind:
            raise InvalidMessage(f"not a {kind.name} message")

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._view):
            raise InvalidMessage("message is truncated")
        out = bytes(self._view[self._pos : self._pos + n])
        self._pos += n
        return out

    def view(self, n: int) -> memoryview:
        if self._pos + n > len(self._view):
            raise InvalidMessage("message is truncated")
        out = self._view[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def items(self, width: int, parse: Callable[[Reader], T]) -> tuple[T, ...]:
        count = self.u32()
        if count * width > len(self._view) - self._pos:
            raise InvalidMessage("message is truncated")
        return tuple(parse(self) for _ in range(count))

    def finish(self) -> None:
        if self._pos != len(self._view):
            raise InvalidMessage("message has trailing bytes")


def header(kind: MessageType) -> bytes:
    return struct.pack("<BB", VERSION, kind)


def check_id(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMessage(f"{what} must be an int")
    if not 0 <= value <= MAX_CLIENT_ID:
        raise InvalidMessage(f"{what} out of range")


def check_sorted(ids: Sequence[int], what: str) -> None:
    for i in ids:
        check_id(i, what)
    if any(a >= b for a, b in itertools.pairwise(ids)):
        raise InvalidMessage(f"{what} list must be strictly increasing")


def check_bytes(value: bytes, size: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise InvalidMessage(f"{what} must be {size} bytes")
