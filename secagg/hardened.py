"""Both halves of the hardened mode (malicious coordinator), side by side.

What a :class:`~secagg.client.SecAggClient` (:class:`Credentials`) and a
:class:`~secagg.server.SecAggServer` (:class:`HardenedServer`) add in
``SecurityMode.HARDENED``; the client's checks are the defence, the server's
the same checks made early so an honest server refuses forgeries at once:

* the signed AdvertiseKeys, over (protocol version, config digest, *this
  client's* model hash, c_pk, s_pk, id);
* the signed key directory: every entry must belong to a consortium member
  and carry a valid signature made over the same parameters and model hash
  (a client given another model signs another payload, so its peers refuse
  it: Pasquini et al.'s model inconsistency fails closed at ShareKeys);
* the session id, over the parameters, the model hash and the signed keys;
* the ConsistencyCheck: sign (session id, U3); unmask only after ``threshold``
  valid signatures from distinct members of U3 on that identical list.

Every check validates everything before it returns; only
:meth:`HardenedServer.accept_signature` keeps state, after its checks pass.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import identity
from secagg.config import SecAggConfig, SecurityMode
from secagg.errors import ConfigError, ConsistencyError, ProtocolError, UnknownIdentity
from secagg.identity import Consortium
from secagg.messages import KeyEntry, UnmaskRequest
from secagg.signed_messages import (
    ConsistencyRequest,
    ConsistencySignature,
    SignedAdvertiseKeys,
    SignedKeyDirectory,
    SignedKeyEntry,
    SignedUnmaskRequest,
)

__all__ = ["Credentials", "HardenedServer", "credentials"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """One client's hardened-mode inputs: registry, signing key, model hash."""

    consortium: Consortium
    signing_key: Ed25519PrivateKey
    model_hash: bytes

    def advertise(
        self, config: SecAggConfig, me: int, c_pk: bytes, s_pk: bytes
    ) -> bytes:
        """The signed AdvertiseKeys message."""
        payload = identity.advertise_payload(
            config.digest(), self.model_hash, me, c_pk, s_pk
        )
        sig = identity.sign(self.signing_key, payload)
        return SignedAdvertiseKeys(
            sender=me, c_pk=c_pk, s_pk=s_pk, signature=sig
        ).to_bytes()

    def open_directory(
        self, config: SecAggConfig, data: bytes
    ) -> tuple[dict[int, KeyEntry], bytes]:
        """Verify a signed key directory; return its entries and the session id.

        :class:`UnknownIdentity` for an id outside the consortium (a Sybil),
        :class:`InvalidSignature` for a signature that does not verify over
        this client's own parameters and model hash.
        """
        directory = SignedKeyDirectory.from_bytes(data)
        digest = config.digest()
        for e in directory.entries:
            payload = identity.advertise_payload(
                digest, self.model_hash, e.client_id, e.c_pk, e.s_pk
            )
            identity.verify(self.consortium, e.client_id, e.signature, payload)
        session = identity.signed_session_id(
            digest,
            self.model_hash,
            ((e.client_id, e.c_pk, e.s_pk, e.signature) for e in directory.entries),
        )
        return {e.client_id: e.keys for e in directory.entries}, session

    def sign_survivors(
        self, me: int, session: bytes, survivors: tuple[int, ...]
    ) -> bytes:
        """This client's ConsistencyCheck answer over (session id, U3)."""
        payload = identity.survivors_payload(session, survivors)
        sig = identity.sign(self.signing_key, payload)
        return ConsistencySignature(sender=me, signature=sig).to_bytes()

    def open_unmask_request(
        self,
        config: SecAggConfig,
        session: bytes,
        signed: tuple[int, ...],
        data: bytes,
    ) -> UnmaskRequest:
        """The Unmasking request, once its ConsistencyCheck evidence holds.

        The survivor list must be the one this client signed, and at least
        ``threshold`` distinct members of it must have signed it too; with
        2t > n + corrupt (the client's policy) no other list can reach t.
        """
        request = SignedUnmaskRequest.from_bytes(data)
        if request.survivors != signed:
            raise ConsistencyError(
                "the Unmasking request's survivor list differs from the list "
                "this client signed"
            )
        members = set(signed)
        outsiders = [i for i, _ in request.signatures if i not in members]
        if outsiders:
            raise ConsistencyError(
                f"survivor-list signatures from clients outside it: {outsiders}"
            )
        if len(request.signatures) < config.threshold:
            raise ConsistencyError(
                f"only {len(request.signatures)} signatures on the survivor list; "
                f"threshold is {config.threshold}"
            )
        payload = identity.survivors_payload(session, signed)
        for signer, sig in request.signatures:
            identity.verify(self.consortium, signer, sig, payload)
        return request.lists


def credentials(
    config: SecAggConfig,
    me: int,
    consortium: Consortium | None,
    signing_key: Ed25519PrivateKey | None,
    model_hash: bytes | None,
) -> Credentials | None:
    """Check a client's hardened-mode inputs against its mode; ``None`` if
    semi-honest.  Refuses a signing key that is not ``me``'s registered one."""
    given = (consortium, signing_key, model_hash)
    if config.mode is SecurityMode.SEMI_HONEST:
        if any(x is not None for x in given):
            raise ConfigError(
                "consortium, identity and model_hash are hardened-mode inputs"
            )
        return None
    if consortium is None or signing_key is None or model_hash is None:
        raise ConfigError(
            "hardened mode needs the consortium, this client's identity key and "
            "the hash of the model it received"
        )
    if (
        not isinstance(model_hash, bytes)
        or len(model_hash) != identity.MODEL_HASH_BYTES
    ):
        raise ConfigError("model_hash must be 32 bytes (SHA-256 of the model)")
    registered = consortium.public_key(me).public_bytes_raw()
    if identity.identity_public_bytes(signing_key) != registered:
        raise UnknownIdentity(
            f"the identity key given does not match client {me}'s registered key"
        )
    return Credentials(
        consortium=consortium, signing_key=signing_key, model_hash=model_hash
    )


class HardenedServer:
    """The server's half: verify what it relays, run the ConsistencyCheck."""

    def __init__(
        self, config: SecAggConfig, consortium: Consortium, model_hash: bytes
    ) -> None:
        self._config = config
        self._consortium = consortium
        self._model_hash = model_hash
        self.signatures: dict[int, bytes] = {}  # survivor -> signature on U3

    def verify_advert(self, msg: SignedAdvertiseKeys) -> None:
        """Refuse an advert whose signature is not its member's over these
        parameters and this server's model hash."""
        payload = identity.advertise_payload(
            self._config.digest(), self._model_hash, msg.sender, msg.c_pk, msg.s_pk
        )
        identity.verify(self._consortium, msg.sender, msg.signature, payload)

    def directory(self, adverts: Sequence[SignedAdvertiseKeys]) -> tuple[bytes, bytes]:
        """The session id as the clients compute it, and the signed directory."""
        entries = tuple(
            SignedKeyEntry(
                client_id=a.sender, c_pk=a.c_pk, s_pk=a.s_pk, signature=a.signature
            )
            for a in adverts
        )
        session = identity.signed_session_id(
            self._config.digest(),
            self._model_hash,
            ((e.client_id, e.c_pk, e.s_pk, e.signature) for e in entries),
        )
        return session, SignedKeyDirectory(entries=entries).to_bytes()

    @staticmethod
    def consistency_request(survivors: Collection[int]) -> bytes:
        """The ConsistencyCheck request: the survivor list U3 to sign."""
        return ConsistencyRequest(survivors=tuple(sorted(survivors))).to_bytes()

    def accept_signature(
        self, msg: ConsistencySignature, session: bytes, survivors: Collection[int]
    ) -> None:
        """Keep a survivor's valid signature over (session id, U3)."""
        if msg.sender in self.signatures:
            raise ProtocolError(f"duplicate message from client {msg.sender}")
        payload = identity.survivors_payload(session, survivors)
        identity.verify(self._consortium, msg.sender, msg.signature, payload)
        self.signatures[msg.sender] = msg.signature

    def unmask_request(
        self, survivors: Collection[int], dropped: Collection[int]
    ) -> bytes:
        """The Unmasking request carrying every ConsistencyCheck signature."""
        return SignedUnmaskRequest(
            survivors=tuple(sorted(survivors)),
            dropped=tuple(sorted(dropped)),
            signatures=tuple(sorted(self.signatures.items())),
        ).to_bytes()
