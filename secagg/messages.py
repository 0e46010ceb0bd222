"""Wire messages: frozen dataclasses with a version byte and exact framing.

Layout of every message: ``version (u8) ‖ type (u8) ‖ body``, integers little
endian, lists sorted by client id with a u32 count, every length exact.  Any
malformed input (truncated, extended, wrong version or type, an out-of-range
id, an unsorted or duplicated list, a share outside the field, a ring value
above 2^k) raises :class:`~secagg.errors.InvalidMessage` and nothing else.
Nothing received is ever unpickled: decoding is ``struct`` only.

>>> m = AdvertiseKeys(sender=3, c_pk=bytes(32), s_pk=bytes(range(32)))
>>> AdvertiseKeys.from_bytes(m.to_bytes()) == m
True
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from secagg import ring, shamir
from secagg._wire import (
    VERSION,
    MessageType,
    Reader,
    check_bytes,
    check_id,
    check_sorted,
    header,
)
from secagg.crypto import AEAD_TAG_BYTES, KEY_BYTES
from secagg.errors import InvalidMessage
from secagg.robust import COMMITMENT_BYTES

__all__ = [
    "PAIR_COMMITMENT_BYTES",
    "SHARE_CIPHERTEXT_BYTES",
    "SHARE_PLAINTEXT_BYTES",
    "VERSION",
    "AdvertiseKeys",
    "KeyDirectory",
    "KeyEntry",
    "MaskedInput",
    "MessageType",
    "ShareKeys",
    "ShareRelay",
    "UnmaskRequest",
    "UnmaskResponse",
]

# sender u32 ‖ receiver u32 ‖ share of s_sk ‖ share of b_u
SHARE_PLAINTEXT_BYTES = 8 + 2 * shamir.SHARE_BYTES
SHARE_CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + AEAD_TAG_BYTES
# Commitment to the mask-key share ‖ commitment to the seed share.
PAIR_COMMITMENT_BYTES = 2 * COMMITMENT_BYTES


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertiseKeys:
    """Round 0, client → server: the two fresh X25519 public keys."""

    sender: int
    c_pk: bytes
    s_pk: bytes

    def __post_init__(self) -> None:
        check_id(self.sender, "sender")
        check_bytes(self.c_pk, KEY_BYTES, "c_pk")
        check_bytes(self.s_pk, KEY_BYTES, "s_pk")

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        head = header(MessageType.ADVERTISE_KEYS)
        return head + struct.pack("<I", self.sender) + self.c_pk + self.s_pk

    @classmethod
    def from_bytes(cls, data: bytes) -> AdvertiseKeys:
        """Decode; :class:`InvalidMessage` on any malformation."""
        r = Reader(data, MessageType.ADVERTISE_KEYS)
        out = cls(sender=r.u32(), c_pk=r.take(KEY_BYTES), s_pk=r.take(KEY_BYTES))
        r.finish()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyEntry:
    """One advertised client in a :class:`KeyDirectory`."""

    client_id: int
    c_pk: bytes
    s_pk: bytes

    def __post_init__(self) -> None:
        check_id(self.client_id, "client id")
        check_bytes(self.c_pk, KEY_BYTES, "c_pk")
        check_bytes(self.s_pk, KEY_BYTES, "s_pk")


def _key_entry(r: Reader) -> KeyEntry:
    return KeyEntry(client_id=r.u32(), c_pk=r.take(KEY_BYTES), s_pk=r.take(KEY_BYTES))


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyDirectory:
    """Round 1 request, server → every client: all advertised keys (U1)."""

    entries: tuple[KeyEntry, ...]

    def __post_init__(self) -> None:
        check_sorted([e.client_id for e in self.entries], "client id")

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        parts = [
            header(MessageType.KEY_DIRECTORY),
            struct.pack("<I", len(self.entries)),
        ]
        for e in self.entries:
            parts.append(struct.pack("<I", e.client_id) + e.c_pk + e.s_pk)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyDirectory:
        """Decode; :class:`InvalidMessage` on any malformation."""
        r = Reader(data, MessageType.KEY_DIRECTORY)
        out = cls(entries=r.items(4 + 2 * KEY_BYTES, _key_entry))
        r.finish()
        return out


def _ciphertext_entry(r: Reader) -> tuple[int, bytes]:
    return r.u32(), r.take(SHARE_CIPHERTEXT_BYTES)


def _commitment_entry(r: Reader) -> tuple[int, bytes]:
    return r.u32(), r.take(PAIR_COMMITMENT_BYTES)


def _encode_entries(entries: tuple[tuple[int, bytes], ...]) -> bytes:
    parts = [struct.pack("<I", len(entries))]
    parts.extend(struct.pack("<I", i) + blob for i, blob in entries)
    return b"".join(parts)


def _check_sealed(
    ciphertexts: tuple[tuple[int, bytes], ...],
    commitments: tuple[tuple[int, bytes], ...],
    what: str,
) -> None:
    check_sorted([i for i, _ in ciphertexts], what)
    for _, ct in ciphertexts:
        check_bytes(ct, SHARE_CIPHERTEXT_BYTES, "share ciphertext")
    if [i for i, _ in commitments] != [i for i, _ in ciphertexts]:
        raise InvalidMessage("share commitments must name the ciphertexts' parties")
    for _, c in commitments:
        check_bytes(c, PAIR_COMMITMENT_BYTES, "share commitment")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareKeys:
    """Round 1, client → server: one encrypted share bundle per neighbour.

    ``commitments`` holds, per receiver, the commitments to the two shares
    inside its bundle (mask-key share ‖ seed share, :mod:`secagg.robust`);
    ``seed_commitment`` commits to the sender's self-mask seed.
    """

    sender: int
    seed_commitment: bytes
    ciphertexts: tuple[tuple[int, bytes], ...]  # (receiver, ciphertext)
    commitments: tuple[tuple[int, bytes], ...]  # (receiver, key ‖ seed)

    def __post_init__(self) -> None:
        check_id(self.sender, "sender")
        check_bytes(self.seed_commitment, COMMITMENT_BYTES, "seed commitment")
        _check_sealed(self.ciphertexts, self.commitments, "receiver")

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        return (
            header(MessageType.SHARE_KEYS)
            + struct.pack("<I", self.sender)
            + self.seed_commitment
            + _encode_entries(self.ciphertexts)
            + _encode_entries(self.commitments)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ShareKeys:
        """Decode; :class:`InvalidMessage` on any malformation."""
        r = Reader(data, MessageType.SHARE_KEYS)
        sender = r.u32()
        seed_commitment = r.take(COMMITMENT_BYTES)
        ciphertexts = r.items(4 + SHARE_CIPHERTEXT_BYTES, _ciphertext_entry)
        commitments = r.items(4 + PAIR_COMMITMENT_BYTES, _commitment_entry)
        r.finish()
        return cls(
            sender=sender,
            seed_commitment=seed_commitment,
            ciphertexts=ciphertexts,
            commitments=commitments,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareRelay:
    """Round 2 request, server → client: bundles addressed to it (from U2),
    each with its sender's commitments to the shares inside."""

    receiver: int
    ciphertexts: tuple[tuple[int, bytes], ...]  # (sender, ciphertext)
    commitments: tuple[tuple[int, bytes], ...]  # (sender, key ‖ seed)

    def __post_init__(self) -> None:
        check_id(self.receiver, "receiver")
        _check_sealed(self.ciphertexts, self.commitments, "sender")

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        return (
            header(MessageType.SHARE_RELAY)
            + struct.pack("<I", self.receiver)
            + _encode_entries(self.ciphertexts)
            + _encode_entries(self.commitments)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ShareRelay:
        """Decode; :class:`InvalidMessage` on any malformation."""
        r = Reader(data, MessageType.SHARE_RELAY)
        receiver = r.u32()
        ciphertexts = r.items(4 + SHARE_CIPHERTEXT_BYTES, _ciphertext_entry)
        commitments = r.items(4 + PAIR_COMMITMENT_BYTES, _commitment_entry)
        r.finish()
        return cls(receiver=receiver, ciphertexts=ciphertexts, commitments=commitments)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class MaskedInput:
    """Round 2, client → server: the masked ring vector, ⌈k/8⌉ bytes a value."""

    sender: int
    bits: int
    values: ring.RingArray

    def __post_init__(self) -> None:
        check_id(self.sender, "sender")
        if not ring.MIN_RING_BITS <= self.bits <= ring.MAX_RING_BITS:
            raise InvalidMessage("ring bits out of range")
        v = self.values
        if not isinstance(v, np.ndarray) or v.ndim != 1:
            raise InvalidMessage("values must be a 1-D array")
        if v.dtype != ring.container_dtype(self.bits) or v.shape[0] >= 2**32:
            raise InvalidMessage("values have the wrong dtype or length")

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        head = self.frame(self.sender, self.bits, self.values.shape[0])
        return b"".join((head, ring.to_wire(self.values, self.bits)))

    @staticmethod
    def frame(sender: int, bits: int, length: int) -> bytes:
        """The bytes before the payload (the device path writes its own payload)."""
        return header(MessageType.MASKED_INPUT) + struct.pack(
            "<IBI", sender, bits, length
        )

    @staticmethod
    def parse_frame(data: bytes) -> tuple[int, int, int, memoryview]:
        """``(sender, bits, length, payload)``, the payload not yet decoded."""
        r = Reader(data, MessageType.MASKED_INPUT)
        sender, bits, length = r.u32(), r.u8(), r.u32()
        check_id(sender, "sender")
        if not ring.MIN_RING_BITS <= bits <= ring.MAX_RING_BITS:
            raise InvalidMessage("ring bits out of range")
        payload = r.view(length * ring.wire_width(bits))
        r.finish()
        return sender, bits, length, payload

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskedInput:
        """Decode; :class:`InvalidMessage` on any malformation."""
        sender, bits, length, payload = cls.parse_frame(data)
        try:
            values = ring.from_wire(payload, length, bits)
        except ValueError as exc:
            raise InvalidMessage("ring vector is malformed") from exc
        return cls(sender=sender, bits=bits, values=values)


def _id_entry(r: Reader) -> int:
    return r.u32()


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskRequest:
    """Round 4 request, server → survivors: who survived (U3), who dropped."""

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def __post_init__(self) -> None:
        check_sorted(self.survivors, "survivor")
        check_sorted(self.dropped, "dropped")

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        return b"".join(
            [
                header(MessageType.UNMASK_REQUEST),
                struct.pack(
                    f"<I{len(self.survivors)}I", len(self.survivors), *self.survivors
                ),
                struct.pack(
                    f"<I{len(self.dropped)}I", len(self.dropped), *self.dropped
                ),
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskRequest:
        """Decode; :class:`InvalidMessage` on any malformation."""
        r = Reader(data, MessageType.UNMASK_REQUEST)
        survivors = r.items(4, _id_entry)
        dropped = r.items(4, _id_entry)
        r.finish()
        return cls(survivors=survivors, dropped=dropped)


def _share_entry(r: Reader) -> tuple[int, bytes]:
    return r.u32(), r.take(shamir.SHARE_BYTES)


def _check_shares(entries: tuple[tuple[int, bytes], ...], what: str) -> None:
    check_sorted([i for i, _ in entries], what)
    for _, share in entries:
        check_bytes(share, shamir.SHARE_BYTES, "share")
        try:
            shamir.decode_share(share)
        except ValueError as exc:
            raise InvalidMessage("share is not a field element") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskResponse:
    """Round 4, survivor → server: shares of b_v (v survived) and of s_v_sk
    (v dropped); never both for one v."""

    sender: int
    seed_shares: tuple[tuple[int, bytes], ...]  # (owner, share of b_owner)
    key_shares: tuple[tuple[int, bytes], ...]  # (owner, share of s_owner_sk)

    def __post_init__(self) -> None:
        check_id(self.sender, "sender")
        _check_shares(self.seed_shares, "seed share owner")
        _check_shares(self.key_shares, "key share owner")
        seeds = {i for i, _ in self.seed_shares}
        if any(i in seeds for i, _ in self.key_shares):
            raise InvalidMessage("both kinds of share for the same client")

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        parts = [header(MessageType.UNMASK_RESPONSE), struct.pack("<I", self.sender)]
        for entries in (self.seed_shares, self.key_shares):
            parts.append(struct.pack("<I", len(entries)))
            parts.extend(struct.pack("<I", i) + s for i, s in entries)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskResponse:
        """Decode; :class:`InvalidMessage` on any malformation."""
        r = Reader(data, MessageType.UNMASK_RESPONSE)
        sender = r.u32()
        seeds = r.items(4 + shamir.SHARE_BYTES, _share_entry)
        keys = r.items(4 + shamir.SHARE_BYTES, _share_entry)
        r.finish()
        return cls(sender=sender, seed_shares=seeds, key_shares=keys)
