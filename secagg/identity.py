"""Long-term Ed25519 identities of the hardened mode (consortium PKI).

Each institution holds a long-term Ed25519 signing key whose public half is
registered with the consortium.  The registry (:class:`Consortium`) reaches
every client out of band, never through the aggregation server, so the server
can neither add Sybil members nor swap a member's key.

What is signed (every payload starts with its own versioned label, so a
signature made for one purpose never verifies for another):

* AdvertiseKeys: protocol version ‖ config digest ‖ model hash ‖ c_pk ‖ s_pk
  ‖ client id (:func:`advertise_payload`);
* ConsistencyCheck: session id ‖ the sorted survivor list U3
  (:func:`survivors_payload`).

>>> consortium, keys = make_consortium([3, 1])
>>> consortium.ids
(1, 3)
>>> payload = survivors_payload(bytes(32), (1, 3))
>>> verify(consortium, 3, sign(keys[3], payload), payload)
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature as _BadSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from secagg._wire import VERSION
from secagg.config import MAX_CLIENT_ID
from secagg.crypto import Label
from secagg.errors import ConfigError, InvalidSignature, UnknownIdentity

__all__ = [
    "IDENTITY_KEY_BYTES",
    "MODEL_HASH_BYTES",
    "SIGNATURE_BYTES",
    "Consortium",
    "advertise_payload",
    "identity_public_bytes",
    "make_consortium",
    "sign",
    "signed_session_id",
    "survivors_payload",
    "verify",
]

IDENTITY_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MODEL_HASH_BYTES = 32


def identity_public_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte Ed25519 public key of a signing key."""
    return key.public_key().public_bytes_raw()


@dataclass(frozen=True, slots=True)
class Consortium:
    """Frozen registry: client id → raw Ed25519 public identity key.

    Refuses, at construction, ids out of range, keys that are not 32 bytes or
    not valid Ed25519 points, and one identity key registered under two ids
    (a duplicate identity would let one institution count twice).
    """

    members: tuple[tuple[int, bytes], ...]
    _loaded: Mapping[int, Ed25519PublicKey] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        ids = [i for i, _ in self.members]
        if any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise ConfigError("consortium ids must be ints")
        if not all(0 <= i <= MAX_CLIENT_ID for i in ids):
            raise ConfigError(f"consortium ids must be in [0, {MAX_CLIENT_ID}]")
        if ids != sorted(set(ids)):
            raise ConfigError("consortium ids must be distinct and sorted")
        keys = [k for _, k in self.members]
        if any(not isinstance(k, bytes) or len(k) != IDENTITY_KEY_BYTES for k in keys):
            raise ConfigError("identity keys must be 32 raw Ed25519 bytes")
        if len(set(keys)) != len(keys):
            raise ConfigError("one identity key is registered under two client ids")
        loaded: dict[int, Ed25519PublicKey] = {}
        for i, k in self.members:
            try:
                loaded[i] = Ed25519PublicKey.from_public_bytes(k)
            except ValueError as exc:
                raise ConfigError(f"identity key of client {i} is invalid") from exc
        # Read-only view: the registry cannot change after construction.
        object.__setattr__(self, "_loaded", MappingProxyType(loaded))

    @classmethod
    def from_keys(cls, keys: Mapping[int, bytes | Ed25519PublicKey]) -> Consortium:
        """Build from a mapping of ids to public keys (raw bytes or key objects)."""
        raw = {
            i: k.public_bytes_raw() if isinstance(k, Ed25519PublicKey) else k
            for i, k in keys.items()
        }
        return cls(tuple(sorted(raw.items())))

    @property
    def ids(self) -> tuple[int, ...]:
        """Registered client ids, ascending."""
        return tuple(i for i, _ in self.members)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._loaded

    def public_key(self, client_id: int) -> Ed25519PublicKey:
        """The identity key of ``client_id``; :class:`UnknownIdentity` if absent."""
        key = self._loaded.get(client_id)
        if key is None:
            raise UnknownIdentity(
                f"client {client_id} is not a registered consortium member"
            )
        return key


def make_consortium(
    ids: Iterable[int], entropy: Callable[[int], bytes] = os.urandom
) -> tuple[Consortium, dict[int, Ed25519PrivateKey]]:
    """Fresh identity keys for ``ids`` and their registry (simulations, tests)."""
    keys = {
        i: Ed25519PrivateKey.from_private_bytes(entropy(IDENTITY_KEY_BYTES))
        for i in sorted(set(ids))
    }
    registry = Consortium.from_keys({i: k.public_key() for i, k in keys.items()})
    return registry, keys


def advertise_payload(
    config_digest: bytes, model_hash: bytes, client_id: int, c_pk: bytes, s_pk: bytes
) -> bytes:
    """Bytes an identity key signs in AdvertiseKeys (fixed widths, no ambiguity)."""
    return b"".join(
        (
            Label.ADVERTISE_SIGNATURE.value,
            struct.pack("<B", VERSION),
            config_digest,
            model_hash,
            c_pk,
            s_pk,
            struct.pack("<I", client_id),
        )
    )


def survivors_payload(session: bytes, survivors: Iterable[int]) -> bytes:
    """Bytes an identity key signs in ConsistencyCheck: session id and U3."""
    ids = sorted(survivors)
    return (
        Label.SURVIVOR_SIGNATURE.value
        + session
        + struct.pack(f"<I{len(ids)}I", len(ids), *ids)
    )


def sign(key: Ed25519PrivateKey, payload: bytes) -> bytes:
    """Ed25519 signature (deterministic, 64 bytes)."""
    return key.sign(payload)


def verify(
    consortium: Consortium, client_id: int, signature: bytes, payload: bytes
) -> None:
    """Raise :class:`UnknownIdentity` or :class:`InvalidSignature`, else return."""
    key = consortium.public_key(client_id)
    try:
        key.verify(signature, payload)
    except _BadSignature as exc:
        raise InvalidSignature(
            f"signature of client {client_id} does not verify"
        ) from exc


def signed_session_id(
    config_digest: bytes,
    model_hash: bytes,
    entries: Iterable[tuple[int, bytes, bytes, bytes]],
) -> bytes:
    """SHA-256 over the parameters, the model hash and the sorted signed key list.

    ``entries`` are ``(id, c_pk, s_pk, signature)``.  Every derived key (share
    channel, pairwise and self masks) is salted with this id, so two clients
    holding different models derive unrelated keys even if every other check
    were bypassed.
    """
    h = hashlib.sha256(Label.SIGNED_SESSION_ID.value + config_digest + model_hash)
    for cid, c_pk, s_pk, sig in sorted(entries):
        h.update(struct.pack("<I", cid) + c_pk + s_pk + sig)
    return h.digest()
