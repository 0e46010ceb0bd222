"""Both halves of the hardened mode (malicious coordinator), side by side.

What a :class:`~secagg.client.SecAggClient` (:class:`Credentials`) and a
:class:`~secagg.server.SecAggServer` (:class:`HardenedServer`) add in
``SecurityMode.HARDENED``; the client's checks are the defence, the server's
the same checks made early so an honest server refuses forgeries at once:

* the signed AdvertiseKeys, over (protocol version, config digest with its
  session nonce, *this client's* model hash, c_pk, s_pk, id); the nonce is
  claimed in the client's durable participation log first, so the client
  signs keys for one nonce once and an advert never replays elsewhere;
* the signed key directory: every entry must belong to a consortium member
  and carry a valid signature made over the same parameters and model hash
  (a client given another model signs another payload, so its peers refuse
  it: Pasquini et al.'s model inconsistency fails closed at ShareKeys);
* the session id, over the parameters, the model hash and the signed keys;
* the ConsistencyCheck: sign (session id, U3); before revealing any share
  of a peer u, require ``threshold`` valid signatures on that identical list
  from u's share holders (u's closed neighbourhood), so with 2t > g + C no
  second list can gather them; the server relays each survivor the
  signatures it counts;
* SecAgg+ neighbourhoods from the roster graph (:mod:`secagg.threat`).

Every check validates everything before it returns; only
:meth:`HardenedServer.accept_signature` keeps state, after its checks pass.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import identity, threat
from secagg.config import GraphKind, SecAggConfig, SecurityMode
from secagg.errors import ConfigError, ConsistencyError, ProtocolError, UnknownIdentity
from secagg.identity import Consortium
from secagg.messages import KeyEntry, UnmaskRequest
from secagg.participation import ParticipationLog
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
    """One client's hardened-mode inputs: registry, signing key, model hash,
    and the institution's participation log."""

    consortium: Consortium
    signing_key: Ed25519PrivateKey
    model_hash: bytes
    participation: ParticipationLog

    @property
    def roster_size(self) -> int:
        """N, the consortium members the colluders are counted over."""
        return len(self.consortium.members)

    def graph(self, config: SecAggConfig) -> threat.RosterGraph | None:
        """The roster graph of a SecAgg+ session; ``None`` on the complete graph."""
        return _roster_graph(config, self.consortium)

    def advertise(
        self, config: SecAggConfig, me: int, c_pk: bytes, s_pk: bytes
    ) -> bytes:
        """The signed AdvertiseKeys message, once per session nonce."""
        self.participation.claim_nonce(config.session_nonce)
        payload = identity.advertise_payload(
            config.digest(), self.model_hash, me, c_pk, s_pk
        )
        sig = identity.sign(self.signing_key, payload)
        return SignedAdvertiseKeys(
            sender=me, c_pk=c_pk, s_pk=s_pk, signature=sig
        ).to_bytes()

    def open_directory(
        self, config: SecAggConfig, me: int, data: bytes
    ) -> tuple[dict[int, KeyEntry], bytes]:
        """Verify a signed key directory; return its entries and the session id.

        :class:`UnknownIdentity` for an id outside the consortium (a Sybil),
        :class:`InvalidSignature` for a signature that does not verify over
        this client's own parameters and model hash.  In SecAgg+ only the
        neighbours' signatures are verified here: only their keys are used,
        and every other entry is verified by that member's own neighbours.
        """
        directory = SignedKeyDirectory.from_bytes(data)
        digest = config.digest()
        graph = self.graph(config)
        used = None if graph is None else graph.closed(me)
        for e in directory.entries:
            if e.client_id not in self.consortium:
                raise UnknownIdentity(
                    f"client {e.client_id} is not a registered consortium member"
                )
            if used is not None and e.client_id not in used:
                continue
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
        self, signed: tuple[int, ...], data: bytes
    ) -> tuple[UnmaskRequest, dict[int, bytes]]:
        """The Unmasking request and its signatures, if the list is the one
        this client signed and every signer is on it (the signatures are
        checked, as far as they are used, by :meth:`check_quorum`)."""
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
        return request.lists, dict(request.signatures)

    def check_quorum(
        self,
        config: SecAggConfig,
        session: bytes,
        signed: tuple[int, ...],
        signatures: dict[int, bytes],
        owners: Iterable[int],
        holders: Callable[[int], frozenset[int]],
    ) -> None:
        """Every owner whose share this client reveals must have ``threshold``
        valid signatures on ``signed`` from its share holders ``holders(u)``.

        Honest holders sign one list; with 2t > g + C (the client's policy)
        no second list can gather t signatures among any owner's holders, so
        every honest holder treats each owner alike.  Signatures of clients
        that hold none of these shares are not even verified.
        """
        groups = {u: holders(u) for u in owners}
        relevant: set[int] = set().union(*groups.values()) if groups else set()
        payload = identity.survivors_payload(session, signed)
        valid = set()
        for signer in sorted(relevant & set(signatures)):
            identity.verify(self.consortium, signer, signatures[signer], payload)
            valid.add(signer)
        for owner in sorted(groups):
            count = len(valid & groups[owner])
            if count < config.threshold:
                raise ConsistencyError(
                    f"only {count} signatures on the survivor list from client "
                    f"{owner}'s share holders; threshold is {config.threshold}"
                )


def _roster_graph(
    config: SecAggConfig, consortium: Consortium
) -> threat.RosterGraph | None:
    if config.graph is GraphKind.COMPLETE:
        return None
    return threat.roster_graph(consortium.members, config.degree)


def credentials(
    config: SecAggConfig,
    me: int,
    consortium: Consortium | None,
    signing_key: Ed25519PrivateKey | None,
    model_hash: bytes | None,
    participation: ParticipationLog | None,
) -> Credentials | None:
    """Check a client's hardened-mode inputs against its mode; ``None`` if
    semi-honest.  Refuses a signing key that is not ``me``'s registered one,
    and a model this client already contributed to."""
    given = (consortium, signing_key, model_hash, participation)
    if config.mode is SecurityMode.SEMI_HONEST:
        if any(x is not None for x in given):
            raise ConfigError(
                "consortium, identity, model_hash and participation are "
                "hardened-mode inputs"
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
    if not isinstance(participation, ParticipationLog):
        raise ConfigError(
            "hardened mode needs this institution's participation log (one "
            "contribution per model, one advert per session nonce)"
        )
    participation.check_model(model_hash)
    return Credentials(
        consortium=consortium,
        signing_key=signing_key,
        model_hash=model_hash,
        participation=participation,
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
        #: SecAgg+ neighbourhoods over the roster (``None``: complete graph).
        self.graph = _roster_graph(config, consortium)

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

    def unmask_requests(
        self, survivors: Collection[int], dropped: Collection[int]
    ) -> dict[int, bytes]:
        """The Unmasking request of each signer, carrying the signatures it
        counts: every one on the complete graph, on SecAgg+ those of the
        share holders of its neighbours (two hops on the roster graph)."""
        sigs = self.signatures

        def request(signers: Iterable[int]) -> bytes:
            return SignedUnmaskRequest(
                survivors=tuple(sorted(survivors)),
                dropped=tuple(sorted(dropped)),
                signatures=tuple((i, sigs[i]) for i in sorted(signers)),
            ).to_bytes()

        if self.graph is None:
            return dict.fromkeys(sigs, request(sigs))
        return {v: request(self.graph.two_hops(v) & set(sigs)) for v in sigs}
