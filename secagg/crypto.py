"""Key agreement, key derivation and share encryption (pyca only).

* X25519 for both key pairs of a client: ``c`` (share channel) and ``s``
  (pairwise masks).  They are separate because ``s`` of a dropped client is
  revealed to the server, which must not open the share channel with it.
* HKDF-SHA256 with the session id as salt and a distinct versioned label per
  use (:class:`Label`), so no derived key can ever serve two purposes.
* ChaCha20-Poly1305 for shares, with associated data that binds the session
  id, the sender and the receiver.

>>> len({label.value for label in Label}) == len(Label)
True
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import InvalidKey, InvalidShare

__all__ = [
    "AEAD_TAG_BYTES",
    "KEY_BYTES",
    "TENSOR_NAME",
    "Label",
    "agree",
    "channel_key",
    "decrypt_share",
    "derive",
    "encrypt_share",
    "generate_private_key",
    "pair_mask_key",
    "private_from_bytes",
    "public_bytes",
    "rounding_key",
    "self_mask_key",
    "session_id",
]

KEY_BYTES = 32
AEAD_TAG_BYTES = 16
TENSOR_NAME = b"vector"


class Label(enum.Enum):
    """HKDF ``info`` prefixes and hash labels, one per use, versioned."""

    SHARE_CHANNEL = b"fedshield/secagg/v1/share-channel"
    SHARE_AAD = b"fedshield/secagg/v1/share-aad"
    PAIR_MASK = b"fedshield/secagg/v1/pair-mask"
    SELF_MASK = b"fedshield/secagg/v1/self-mask"
    ROUNDING = b"fedshield/secagg/v1/rounding"
    SESSION_ID = b"fedshield/secagg/v1/session-id"
    # Hardened mode: what an identity key signs, and the signed session id.
    ADVERTISE_SIGNATURE = b"fedshield/secagg/v1/advertise-signature"
    SURVIVOR_SIGNATURE = b"fedshield/secagg/v1/survivor-signature"
    SIGNED_SESSION_ID = b"fedshield/secagg/v1/signed-session-id"
    # Commitments a dealer publishes with its shares (secagg.robust).
    SEED_COMMITMENT = b"fedshield/secagg/v1/seed-commitment"
    SHARE_COMMITMENT = b"fedshield/secagg/v1/share-commitment"


def derive(label: Label, ikm: bytes, salt: bytes, context: bytes) -> bytes:
    """HKDF-SHA256(ikm, salt, info = label ‖ 0x00 ‖ context) → 32 bytes."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=salt,
        info=label.value + b"\x00" + context,
    )
    return hkdf.derive(ikm)


def generate_private_key(entropy: Callable[[int], bytes]) -> X25519PrivateKey:
    """A fresh X25519 private key from ``entropy`` (``os.urandom`` in production)."""
    return X25519PrivateKey.from_private_bytes(entropy(KEY_BYTES))


def private_from_bytes(data: bytes) -> X25519PrivateKey:
    """An X25519 private key from its 32 raw bytes."""
    return X25519PrivateKey.from_private_bytes(data)


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``key``."""
    return key.public_key().public_bytes_raw()


def agree(key: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 shared secret; :class:`InvalidKey` for a low-order peer key."""
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise InvalidKey("peer public key is invalid (low order)") from exc


def _pair(a: int, b: int) -> bytes:
    # The pair is unordered: both ends must derive the same key.
    return struct.pack("<II", min(a, b), max(a, b))


def channel_key(shared: bytes, session: bytes, a: int, b: int) -> bytes:
    """AEAD key of the share channel between clients ``a`` and ``b``."""
    return derive(Label.SHARE_CHANNEL, shared, session, _pair(a, b))


def pair_mask_key(shared: bytes, session: bytes, a: int, b: int) -> bytes:
    """PRG key of the pairwise mask between ``a`` and ``b`` for the vector."""
    return derive(Label.PAIR_MASK, shared, session, _pair(a, b) + TENSOR_NAME)


def self_mask_key(seed: bytes, session: bytes, owner: int) -> bytes:
    """PRG key of ``owner``'s self mask, from its seed ``b_u``."""
    return derive(
        Label.SELF_MASK, seed, session, struct.pack("<I", owner) + TENSOR_NAME
    )


def rounding_key(seed: bytes) -> bytes:
    """PRG key for stochastic rounding.

    Quantisation precedes the session, so there is no session id to bind; the
    seed is fresh from the CSPRNG and used for one vector only.
    """
    return derive(Label.ROUNDING, seed, b"", TENSOR_NAME)


def session_id(config_digest: bytes, keys: Iterable[tuple[int, bytes, bytes]]) -> bytes:
    """SHA-256 over the configuration and every advertised ``(id, c_pk, s_pk)``.

    Each client computes it from the key list it received, so a server that
    shows two clients different key lists gives them different sessions, and
    their shares and masks no longer fit together.
    """
    h = hashlib.sha256(Label.SESSION_ID.value + config_digest)
    for cid, c_pk, s_pk in sorted(keys):
        h.update(struct.pack("<I", cid) + c_pk + s_pk)
    return h.digest()


def _aad(session: bytes, sender: int, receiver: int, bound: bytes) -> bytes:
    return (
        Label.SHARE_AAD.value + session + struct.pack("<II", sender, receiver) + bound
    )


def _nonce(sender: int, receiver: int) -> bytes:
    # One message per direction per session: (sender, receiver) is unique
    # under the pair's key.
    return struct.pack("<II4x", sender, receiver)


def encrypt_share(
    key: bytes,
    session: bytes,
    sender: int,
    receiver: int,
    plaintext: bytes,
    bound: bytes = b"",
) -> bytes:
    """ChaCha20-Poly1305 seal of a share bundle from ``sender`` to ``receiver``.

    ``bound`` is public data the tag also covers (the share commitments sent
    beside the bundle), so a relay that alters it fails authentication.
    """
    return ChaCha20Poly1305(key).encrypt(
        _nonce(sender, receiver), plaintext, _aad(session, sender, receiver, bound)
    )


def decrypt_share(
    key: bytes,
    session: bytes,
    sender: int,
    receiver: int,
    ciphertext: bytes,
    bound: bytes = b"",
) -> bytes:
    """Open a share bundle; :class:`InvalidShare` if it fails authentication."""
    try:
        return ChaCha20Poly1305(key).decrypt(
            _nonce(sender, receiver),
            ciphertext,
            _aad(session, sender, receiver, bound),
        )
    except InvalidTag as exc:
        raise InvalidShare(
            f"share from client {sender} to client {receiver} failed to authenticate"
        ) from exc
