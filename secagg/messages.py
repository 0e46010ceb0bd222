"""Wire messages of every session, and the share plaintext sealed inside one.

Layout of every message: ``version (u8) ‖ type (u8) ‖ fields`` in the order
each class declares them (:mod:`secagg._wire`), integers little endian, lists
sorted by client id with a u32 count, every length exact.  Any malformed input
(truncated, extended, wrong version or type, an out-of-range id, an unsorted
or duplicated list, a share outside the field, a ring value above 2^k)
raises :class:`~secagg.errors.InvalidMessage` and nothing else.  Nothing
received is ever unpickled: decoding is ``struct`` only.  The hardened mode's
signed messages extend these in :mod:`secagg.signed_messages`.

>>> m = AdvertiseKeys(sender=3, c_pk=bytes(32), s_pk=bytes(range(32)))
>>> AdvertiseKeys.from_bytes(m.to_bytes()) == m
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from secagg import shamir
from secagg._wire import (
    CLIENT_ID,
    U32,
    Codec,
    Fields,
    Fixed,
    Ids,
    Int,
    Keyed,
    Message,
    MessageType,
    Reader,
    Records,
)
from secagg.crypto import AEAD_TAG_BYTES, KEY_BYTES
from secagg.errors import InvalidMessage
from secagg.ring import MAX_RING_BITS, MIN_RING_BITS, wire_width
from secagg.robust import COMMITMENT_BYTES

__all__ = [
    "COMMITMENT_BYTES",
    "PAIR_COMMITMENT_BYTES",
    "SHARE_BYTES",
    "SHARE_CIPHERTEXT_BYTES",
    "SHARE_PLAINTEXT_BYTES",
    "AdvertiseKeys",
    "KeyDirectory",
    "KeyEntry",
    "MaskedInput",
    "MessageType",
    "Share",
    "ShareKeys",
    "SharePlaintext",
    "ShareRelay",
    "UnmaskRequest",
    "UnmaskResponse",
]

#: A Shamir share on the wire: little-endian bytes, below the prime.
SHARE_BYTES = shamir.SHARE_BYTES
# sender u32 ‖ receiver u32 ‖ share of s_sk ‖ share of b_u
SHARE_PLAINTEXT_BYTES = 8 + 2 * SHARE_BYTES
SHARE_CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + AEAD_TAG_BYTES
#: Commitment to the mask-key share ‖ commitment to the seed share.
PAIR_COMMITMENT_BYTES = 2 * COMMITMENT_BYTES


class Share(Codec[int]):
    """A share value ``y`` in ``[0, p)`` as 33 little-endian bytes."""

    width = SHARE_BYTES

    def check(self, value: object, what: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidMessage(f"{what} must be an int")
        if not 0 <= value < shamir.PRIME:
            raise InvalidMessage("share is not a field element")

    def encode(self, value: int) -> bytes:
        return value.to_bytes(SHARE_BYTES, "little")

    def decode(self, r: Reader) -> int:
        return int.from_bytes(r.take(SHARE_BYTES), "little")


_KEY = Fixed(KEY_BYTES)
_CIPHERTEXTS = Keyed(Fixed(SHARE_CIPHERTEXT_BYTES))
_COMMITMENTS = Keyed(Fixed(PAIR_COMMITMENT_BYTES))


def _same_parties(
    ciphertexts: tuple[tuple[int, bytes], ...],
    commitments: tuple[tuple[int, bytes], ...],
) -> None:
    if [i for i, _ in commitments] != [i for i, _ in ciphertexts]:
        raise InvalidMessage("share commitments must name the ciphertexts' parties")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertiseKeys(Message):
    """Round 0, client → server: the two fresh X25519 public keys."""

    KIND: ClassVar[MessageType | None] = MessageType.ADVERTISE_KEYS
    FIELDS: ClassVar[Fields] = (("sender", CLIENT_ID), ("c_pk", _KEY), ("s_pk", _KEY))

    sender: int
    c_pk: bytes
    s_pk: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyEntry(Message):
    """One advertised client in a :class:`KeyDirectory`."""

    FIELDS: ClassVar[Fields] = (
        ("client_id", CLIENT_ID),
        ("c_pk", _KEY),
        ("s_pk", _KEY),
    )

    client_id: int
    c_pk: bytes
    s_pk: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyDirectory(Message):
    """Round 1 request, server → every client: all advertised keys (U1)."""

    KIND: ClassVar[MessageType | None] = MessageType.KEY_DIRECTORY
    FIELDS: ClassVar[Fields] = (("entries", Records(KeyEntry)),)

    entries: tuple[KeyEntry, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SharePlaintext(Message):
    """What one client seals for a neighbour in ShareKeys (no header: it
    travels only inside the AEAD ciphertext): its shares of ``s_sk`` and of
    the self-mask seed ``b``, with both parties named."""

    FIELDS: ClassVar[Fields] = (
        ("sender", CLIENT_ID),
        ("receiver", CLIENT_ID),
        ("key_share", Share()),
        ("seed_share", Share()),
    )

    sender: int
    receiver: int
    key_share: int
    seed_share: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareKeys(Message):
    """Round 1, client → server: one encrypted share bundle per neighbour.

    ``commitments`` holds, per receiver, the commitments to the two shares
    inside its bundle (mask-key share ‖ seed share, :mod:`secagg.robust`);
    ``seed_commitment`` commits to the sender's self-mask seed.
    """

    KIND: ClassVar[MessageType | None] = MessageType.SHARE_KEYS
    FIELDS: ClassVar[Fields] = (
        ("sender", CLIENT_ID),
        ("seed_commitment", Fixed(COMMITMENT_BYTES)),
        ("ciphertexts", _CIPHERTEXTS),
        ("commitments", _COMMITMENTS),
    )

    sender: int
    seed_commitment: bytes
    ciphertexts: tuple[tuple[int, bytes], ...]  # (receiver, ciphertext)
    commitments: tuple[tuple[int, bytes], ...]  # (receiver, key ‖ seed)

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _same_parties(self.ciphertexts, self.commitments)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareRelay(Message):
    """Round 2 request, server → client: bundles addressed to it (from U2),
    each with its sender's commitments to the shares inside."""

    KIND: ClassVar[MessageType | None] = MessageType.SHARE_RELAY
    FIELDS: ClassVar[Fields] = (
        ("receiver", CLIENT_ID),
        ("ciphertexts", _CIPHERTEXTS),
        ("commitments", _COMMITMENTS),
    )

    receiver: int
    ciphertexts: tuple[tuple[int, bytes], ...]  # (sender, ciphertext)
    commitments: tuple[tuple[int, bytes], ...]  # (sender, key ‖ seed)

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _same_parties(self.ciphertexts, self.commitments)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class MaskedInput(Message):
    """Round 2, client → server: the masked ring vector.

    ``payload`` holds ``length`` coordinates of ``wire_width(bits)``
    little-endian bytes each; for ``bits`` not a multiple of 8 the unused
    high bits must be zero.  A ring back end turns it into a vector
    (:meth:`secagg.ring.Ring.from_wire`) only after this check.
    """

    KIND: ClassVar[MessageType | None] = MessageType.MASKED_INPUT
    FIELDS: ClassVar[Fields] = (
        ("sender", CLIENT_ID),
        ("bits", Int("<B", MIN_RING_BITS, MAX_RING_BITS)),
        ("length", U32),
    )

    sender: int
    bits: int
    length: int
    payload: bytes | memoryview

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        p = self.payload
        width = wire_width(self.bits)
        if not isinstance(p, bytes | memoryview) or len(p) != self.length * width:
            raise InvalidMessage("ring vector has the wrong length")
        if self.bits % 8:
            top = np.frombuffer(p, dtype=np.uint8)[width - 1 :: width]
            if np.any(top >> (self.bits % 8)):
                raise InvalidMessage("ring coordinate exceeds 2^bits")

    def to_bytes(self) -> bytes:
        return Message.to_bytes(self) + self.payload

    @classmethod
    def read(cls, r: Reader) -> MaskedInput:
        sender, bits, length = (codec.decode(r) for _, codec in cls.FIELDS)
        payload = r.view(length * wire_width(bits))
        return cls(sender=sender, bits=bits, length=length, payload=payload)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskRequest(Message):
    """Round 4 request, server → survivors: who survived (U3), who dropped."""

    KIND: ClassVar[MessageType | None] = MessageType.UNMASK_REQUEST
    FIELDS: ClassVar[Fields] = (("survivors", Ids()), ("dropped", Ids()))

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskResponse(Message):
    """Round 4, survivor → server: shares of b_v (v survived) and of s_v_sk
    (v dropped); never both for one v."""

    KIND: ClassVar[MessageType | None] = MessageType.UNMASK_RESPONSE
    FIELDS: ClassVar[Fields] = (
        ("sender", CLIENT_ID),
        ("seed_shares", Keyed(Share())),
        ("key_shares", Keyed(Share())),
    )

    sender: int
    seed_shares: tuple[tuple[int, int], ...]  # (owner, share of b_owner)
    key_shares: tuple[tuple[int, int], ...]  # (owner, share of s_owner_sk)

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        seeds = {i for i, _ in self.seed_shares}
        if any(i in seeds for i, _ in self.key_shares):
            raise InvalidMessage("both kinds of share for the same client")
