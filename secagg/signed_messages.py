"""Wire messages of the hardened mode: signed keys and the ConsistencyCheck.

Same framing and the same single decoding path as :mod:`secagg.messages`
(``version ‖ type ‖ body`` through :class:`~secagg._wire.Reader`): any
malformed input raises :class:`~secagg.errors.InvalidMessage` and nothing
else.  Signatures are opaque 64-byte strings here; whether they verify is the
receiver's check (:mod:`secagg.identity`), not the decoder's.

>>> m = ConsistencySignature(sender=2, signature=bytes(64))
>>> ConsistencySignature.from_bytes(m.to_bytes()) == m
True
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from secagg._wire import MessageType, Reader, check_bytes, check_id, check_sorted
from secagg._wire import header as _header
from secagg.crypto import KEY_BYTES
from secagg.identity import SIGNATURE_BYTES
from secagg.messages import KeyEntry, UnmaskRequest

__all__ = [
    "ConsistencyRequest",
    "ConsistencySignature",
    "SignedAdvertiseKeys",
    "SignedKeyDirectory",
    "SignedKeyEntry",
    "SignedUnmaskRequest",
]


def _ids(ids: tuple[int, ...]) -> bytes:
    return struct.pack(f"<I{len(ids)}I", len(ids), *ids)


def _id_entry(r: Reader) -> int:
    return r.u32()


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedAdvertiseKeys:
    """Round 0, client → server: the fresh keys, signed by the identity key."""

    sender: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_id(self.sender, "sender")
        check_bytes(self.c_pk, KEY_BYTES, "c_pk")
        check_bytes(self.s_pk, KEY_BYTES, "s_pk")
        check_bytes(self.signature, SIGNATURE_BYTES, "signature")

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        return (
            _header(MessageType.SIGNED_ADVERTISE_KEYS)
            + struct.pack("<I", self.sender)
            + self.c_pk
            + self.s_pk
            + self.signature
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedAdvertiseKeys:
        """Decode; :class:`InvalidMessage` on any malformation."""
        r = Reader(data, MessageType.SIGNED_ADVERTISE_KEYS)
        out = cls(
            sender=r.u32(),
            c_pk=r.take(KEY_BYTES),
            s_pk=r.take(KEY_BYTES),
            signature=r.take(SIGNATURE_BYTES),
        )
        r.finish()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedKeyEntry:
    """One advertised client in a :class:`SignedKeyDirectory`."""

    client_id: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_id(self.client_id, "client id")
        check_bytes(self.c_pk, KEY_BYTES, "c_pk")
        check_bytes(self.s_pk, KEY_BYTES, "s_pk")
        check_bytes(self.signature, SIGNATURE_BYTES, "signature")

    @property
    def keys(self) -> KeyEntry:
        """The entry without its signature."""
        return KeyEntry(client_id=self.client_id, c_pk=self.c_pk, s_pk=self.s_pk)


def _signed_entry(r: Reader) -> SignedKeyEntry:
    return SignedKeyEntry(
        client_id=r.u32(),
        c_pk=r.take(KEY_BYTES),
        s_pk=r.take(KEY_BYTES),
        signature=r.take(SIGNATURE_BYTES),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedKeyDirectory:
    """Round 1 request, server → clients: every signed advertisement (U1)."""

    entries: tuple[SignedKeyEntry, ...]

    def __post_init__(self) -> None:
        # Strictly increasing ids: one identity cannot appear twice.
        check_sorted([e.client_id for e in self.entries], "client id")

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        parts = [
            _header(MessageType.SIGNED_KEY_DIRECTORY),
            struct.pack("<I", len(self.entries)),
        ]
        parts.extend(
            struct.pack("<I", e.client_id) + e.c_pk + e.s_pk + e.signature
            for e in self.entries
        )
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedKeyDirectory:
        """Decode; :class:`InvalidMessage` on any malformation."""
        r = Reader(data, MessageType.SIGNED_KEY_DIRECTORY)
        out = cls(entries=r.items(4 + 2 * KEY_BYTES + SIGNATURE_BYTES, _signed_entry))
        r.finish()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencyRequest:
    """Round 3 request, server → survivors: the survivor list U3 to sign."""

    survivors: tuple[int, ...]

    def __post_init__(self) -> None:
        check_sorted(self.survivors, "survivor")

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        return _header(MessageType.CONSISTENCY_REQUEST) + _ids(self.survivors)

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsistencyRequest:
        """Decode; :class:`InvalidMessage` on any malformation."""
        r = Reader(data, MessageType.CONSISTENCY_REQUEST)
        out = cls(survivors=r.items(4, _id_entry))
        r.finish()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencySignature:
    """Round 3, survivor → server: its signature over (session id, U3)."""

    sender: int
    signature: bytes

    def __post_init__(self) -> None:
        check_id(self.sender, "sender")
        check_bytes(self.signature, SIGNATURE_BYTES, "signature")

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        return (
            _header(MessageType.CONSISTENCY_SIGNATURE)
            + struct.pack("<I", self.sender)
            + self.signature
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsistencySignature:
        """Decode; :class:`InvalidMessage` on any malformation."""
        r = Reader(data, MessageType.CONSISTENCY_SIGNATURE)
        out = cls(sender=r.u32(), signature=r.take(SIGNATURE_BYTES))
        r.finish()
        return out


def _signature_entry(r: Reader) -> tuple[int, bytes]:
    return r.u32(), r.take(SIGNATURE_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedUnmaskRequest:
    """Round 4 request of the hardened mode: U3, the dropped, and the relayed
    ConsistencyCheck signatures ``(signer, signature)`` over (session id, U3)."""

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    signatures: tuple[tuple[int, bytes], ...]

    def __post_init__(self) -> None:
        check_sorted(self.survivors, "survivor")
        check_sorted(self.dropped, "dropped")
        # Strictly increasing signers: distinct by construction.
        check_sorted([i for i, _ in self.signatures], "signer")
        for _, sig in self.signatures:
            check_bytes(sig, SIGNATURE_BYTES, "signature")

    @property
    def lists(self) -> UnmaskRequest:
        """The survivor and dropped lists as a plain :class:`UnmaskRequest`."""
        return UnmaskRequest(survivors=self.survivors, dropped=self.dropped)

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        parts = [
            _header(MessageType.SIGNED_UNMASK_REQUEST),
            _ids(self.survivors),
            _ids(self.dropped),
            struct.pack("<I", len(self.signatures)),
        ]
        parts.extend(struct.pack("<I", i) + sig for i, sig in self.signatures)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedUnmaskRequest:
        """Decode; :class:`InvalidMessage` on any malformation."""
        r = Reader(data, MessageType.SIGNED_UNMASK_REQUEST)
        survivors = r.items(4, _id_entry)
        dropped = r.items(4, _id_entry)
        signatures = r.items(4 + SIGNATURE_BYTES, _signature_entry)
        r.finish()
        return cls(survivors=survivors, dropped=dropped, signatures=signatures)
