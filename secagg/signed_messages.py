"""Wire messages of the hardened mode: signed keys and the ConsistencyCheck.

Each signed message is its plain counterpart of :mod:`secagg.messages` with
the signatures added after its fields, under its own type byte, through the
same codec: any malformed input raises :class:`~secagg.errors.InvalidMessage`
and nothing else.  Signatures are opaque 64-byte strings here; whether they
verify is the receiver's check (:mod:`secagg.identity`), not the decoder's.

>>> m = ConsistencySignature(sender=2, signature=bytes(64))
>>> ConsistencySignature.from_bytes(m.to_bytes()) == m
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from secagg._wire import (
    CLIENT_ID,
    Fields,
    Fixed,
    Ids,
    Keyed,
    Message,
    MessageType,
    Records,
)
from secagg.identity import SIGNATURE_BYTES
from secagg.messages import AdvertiseKeys, KeyEntry, UnmaskRequest

__all__ = [
    "ConsistencyRequest",
    "ConsistencySignature",
    "SignedAdvertiseKeys",
    "SignedKeyDirectory",
    "SignedKeyEntry",
    "SignedUnmaskRequest",
]

_SIGNATURE = Fixed(SIGNATURE_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedAdvertiseKeys(AdvertiseKeys):
    """Round 0, client → server: the fresh keys, signed by the identity key."""

    KIND: ClassVar[MessageType | None] = MessageType.SIGNED_ADVERTISE_KEYS
    FIELDS: ClassVar[Fields] = (*AdvertiseKeys.FIELDS, ("signature", _SIGNATURE))

    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedKeyEntry(KeyEntry):
    """One advertised client in a :class:`SignedKeyDirectory`."""

    FIELDS: ClassVar[Fields] = (*KeyEntry.FIELDS, ("signature", _SIGNATURE))

    signature: bytes

    @property
    def keys(self) -> KeyEntry:
        """The entry without its signature."""
        return KeyEntry(client_id=self.client_id, c_pk=self.c_pk, s_pk=self.s_pk)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedKeyDirectory(Message):
    """Round 1 request, server → clients: every signed advertisement (U1)."""

    KIND: ClassVar[MessageType | None] = MessageType.SIGNED_KEY_DIRECTORY
    FIELDS: ClassVar[Fields] = (("entries", Records(SignedKeyEntry)),)

    entries: tuple[SignedKeyEntry, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencyRequest(Message):
    """Round 3 request, server → survivors: the survivor list U3 to sign."""

    KIND: ClassVar[MessageType | None] = MessageType.CONSISTENCY_REQUEST
    FIELDS: ClassVar[Fields] = (("survivors", Ids()),)

    survivors: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencySignature(Message):
    """Round 3, survivor → server: its signature over (session id, U3)."""

    KIND: ClassVar[MessageType | None] = MessageType.CONSISTENCY_SIGNATURE
    FIELDS: ClassVar[Fields] = (("sender", CLIENT_ID), ("signature", _SIGNATURE))

    sender: int
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedUnmaskRequest(UnmaskRequest):
    """Round 4 request of the hardened mode: U3, the dropped, and the relayed
    ConsistencyCheck signatures ``(signer, signature)`` over (session id, U3)."""

    KIND: ClassVar[MessageType | None] = MessageType.SIGNED_UNMASK_REQUEST
    FIELDS: ClassVar[Fields] = (
        *UnmaskRequest.FIELDS,
        ("signatures", Keyed(_SIGNATURE)),
    )

    signatures: tuple[tuple[int, bytes], ...]

    @property
    def lists(self) -> UnmaskRequest:
        """The survivor and dropped lists as a plain :class:`UnmaskRequest`."""
        return UnmaskRequest(survivors=self.survivors, dropped=self.dropped)
