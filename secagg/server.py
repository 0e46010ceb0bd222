"""The server side of the protocol: collect a round, then close it.

For each round, feed every client's message to :meth:`SecAggServer.receive`
and call :meth:`SecAggServer.broadcast` to close the round and get the next
round's message for each client; after Unmasking call
:meth:`SecAggServer.unmask`.  Survivor sets shrink monotonically,
U1 ⊇ U2 ⊇ U3 ⊇ U5: a client may vanish before any round, and while at least
``threshold`` remain the server recovers the exact sum of the inputs of U3.

In ``SecurityMode.HARDENED`` the server also needs the consortium registry
and the hash of the model it sent: it verifies every signature it relays (so
an honest server refuses forgeries early), runs the ConsistencyCheck round,
and takes SecAgg+ neighbourhoods from the roster (:mod:`secagg.threat`).

Against cheating clients: a non-canonical or low-order key is refused,
naming its client (:mod:`secagg.pubkeys`); a revealed share that differs
from its dealer's commitment convicts its holder (:class:`~secagg.errors.
CheatingError`); rebuilt secrets are checked and decoded around bad shares
(:mod:`secagg.unmasking`).  While ``threshold`` honest shares of every
secret remain the sum stays exact, and :attr:`SecAggAggregate.cheaters`
names who cheated.

A rejected message raises and leaves the server as it was, except that a
convicted cheater is remembered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from secagg import crypto, identity, pubkeys, ring, share_bundles, threat
from secagg.config import GraphKind, Round, SecAggConfig, SecurityMode, neighbours
from secagg.device_ring import DeviceMaskedInput, RingBackend, ServerRing
from secagg.errors import (
    CheatingError,
    ConfigError,
    InvalidKey,
    ProtocolError,
    TooFewSurvivors,
)
from secagg.identity import Consortium
from secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    KeyEntry,
    MaskedInput,
    ShareKeys,
    ShareRelay,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.signed_messages import (
    ConsistencyRequest,
    ConsistencySignature,
    SignedAdvertiseKeys,
    SignedKeyDirectory,
    SignedKeyEntry,
    SignedUnmaskRequest,
)
from secagg.unmasking import Unmasking, mask_groups

__all__ = ["SecAggAggregate", "SecAggServer"]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SecAggAggregate:
    """What the server learns: sums only, plus who took part.

    ``survivors`` are the clients whose masked input is in the sum (U3);
    ``responders`` those that answered Unmasking; ``cheaters`` those caught
    revealing or dealing shares off their commitments (the sum was decoded
    around them).  ``ring_sum`` is on the host; ``weighted_sum`` on the
    server's device (``RingBackend.TORCH``).
    """

    ring_sum: ring.RingArray
    weighted_sum: torch.Tensor
    total_weight: int
    clipped: int
    survivors: frozenset[int]
    dropped: frozenset[int]
    responders: frozenset[int]
    cheaters: frozenset[int] = frozenset()


class SecAggServer:
    """The aggregator of one session (transport-agnostic: bytes in, bytes out).

    ``device`` and ``backend`` choose where the ring sum lives
    (:mod:`secagg.device_ring`); ``chunk_elems`` caps the (key, element)
    pairs of one eager mask batch on the ``TORCH`` back end.
    """

    def __init__(
        self,
        config: SecAggConfig,
        *,
        device: torch.device | str = "cpu",
        consortium: Consortium | None = None,
        model_hash: bytes | None = None,
        backend: RingBackend | None = None,
        chunk_elems: int | None = None,
    ):
        hardened = config.mode is SecurityMode.HARDENED
        if hardened != (consortium is not None and model_hash is not None):
            raise ConfigError(
                "the consortium and the model hash are given exactly in hardened mode"
            )
        self._consortium = consortium
        self._model_hash = model_hash or b""
        self._advert_sigs: dict[int, bytes] = {}
        self._survivor_sigs: dict[int, bytes] = {}
        self._config = config
        self._ring = ServerRing(config, device, backend, chunk_elems)
        self._round: Round | None = Round.ADVERTISE_KEYS
        self._keys: dict[int, KeyEntry] = {}
        self._session = b""
        self._graph: dict[int, frozenset[int]] = {}
        self._shares: dict[int, dict[int, bytes]] = {}  # sender -> receiver -> ct
        # dealer -> holder -> key ‖ seed share commitments; dealer -> seed's
        self._commitments: dict[int, dict[int, bytes]] = {}
        self._seed_commitments: dict[int, bytes] = {}
        self._cheaters: set[int] = set()
        harary = config.graph is GraphKind.HARARY
        self._roster_graph = (
            threat.roster_graph(consortium.members, config.degree)
            if consortium is not None and harary
            else None
        )
        self._masked: set[int] = set()
        self._responses: dict[int, UnmaskResponse] = {}
        self._dropped: frozenset[int] = frozenset()

    @property
    def round(self) -> Round | None:
        """The round being collected, or ``None`` once the session is over."""
        return self._round

    def _fresh(self, sender: int, seen: Mapping[int, object] | set[int]) -> None:
        if sender in seen:
            raise ProtocolError(f"duplicate message from client {sender}")

    def receive(self, sender: int, data: bytes) -> None:
        """Accept one client's message for the current round.

        ``sender`` is the id the transport authenticated; it must match the
        id inside the message.
        """
        rnd = self._round
        if rnd is Round.ADVERTISE_KEYS and self._consortium is not None:
            self._receive_signed_keys(sender, SignedAdvertiseKeys.from_bytes(data))
        elif rnd is Round.ADVERTISE_KEYS:
            self._receive_keys(sender, AdvertiseKeys.from_bytes(data))
        elif rnd is Round.SHARE_KEYS:
            self._receive_shares(sender, ShareKeys.from_bytes(data))
        elif rnd is Round.MASKED_INPUT:
            self._receive_masked(sender, self._ring.parse(data))
        elif rnd is Round.CONSISTENCY_CHECK:
            self._receive_signature(sender, ConsistencySignature.from_bytes(data))
        elif rnd is Round.UNMASKING:
            self._receive_unmask(sender, UnmaskResponse.from_bytes(data))
        else:
            raise ProtocolError("the session is over")

    @staticmethod
    def _check_sender(sender: int, claimed: int) -> None:
        if sender != claimed:
            raise ProtocolError(
                f"message from client {sender} claims to come from {claimed}"
            )

    def _receive_keys(self, sender: int, msg: AdvertiseKeys) -> None:
        self._check_sender(sender, msg.sender)
        self._fresh(sender, self._keys)
        if len(self._keys) >= self._config.num_clients:
            raise ProtocolError("more clients than the announced cohort")
        pubkeys.check_public_key(msg.c_pk, sender, "c_pk")
        pubkeys.check_public_key(msg.s_pk, sender, "s_pk")
        seen = {k for e in self._keys.values() for k in (e.c_pk, e.s_pk)}
        if msg.c_pk == msg.s_pk or msg.c_pk in seen or msg.s_pk in seen:
            raise InvalidKey(f"client {sender} advertised a duplicate public key")
        self._keys[sender] = KeyEntry(client_id=sender, c_pk=msg.c_pk, s_pk=msg.s_pk)

    def _receive_signed_keys(self, sender: int, msg: SignedAdvertiseKeys) -> None:
        assert self._consortium is not None
        self._check_sender(sender, msg.sender)
        self._fresh(sender, self._keys)
        payload = identity.advertise_payload(
            self._config.digest(), self._model_hash, sender, msg.c_pk, msg.s_pk
        )
        identity.verify(self._consortium, sender, msg.signature, payload)
        self._receive_keys(
            sender, AdvertiseKeys(sender=sender, c_pk=msg.c_pk, s_pk=msg.s_pk)
        )
        self._advert_sigs[sender] = msg.signature

    def _receive_signature(self, sender: int, msg: ConsistencySignature) -> None:
        assert self._consortium is not None
        self._check_sender(sender, msg.sender)
        if sender not in self._masked:
            raise ProtocolError(f"client {sender} is not a survivor")
        self._fresh(sender, self._survivor_sigs)
        payload = identity.survivors_payload(self._session, self._masked)
        identity.verify(self._consortium, sender, msg.signature, payload)
        self._survivor_sigs[sender] = msg.signature

    def _receive_shares(self, sender: int, msg: ShareKeys) -> None:
        self._check_sender(sender, msg.sender)
        if sender not in self._keys:
            raise ProtocolError(f"client {sender} did not advertise keys")
        self._fresh(sender, self._shares)
        receivers = frozenset(v for v, _ in msg.ciphertexts)
        if receivers != self._graph[sender]:
            raise ProtocolError(
                f"client {sender} sent shares to other clients than its neighbours"
            )
        self._shares[sender] = dict(msg.ciphertexts)
        self._commitments[sender] = dict(msg.commitments)
        self._seed_commitments[sender] = msg.seed_commitment

    def _receive_masked(
        self, sender: int, msg: MaskedInput | DeviceMaskedInput
    ) -> None:
        self._check_sender(sender, msg.sender)
        if sender not in self._shares:
            raise ProtocolError(f"client {sender} did not share keys")
        self._fresh(sender, self._masked)
        cfg = self._config
        if msg.bits != cfg.ring_bits or msg.values.shape != (cfg.encoded_length,):
            raise ProtocolError(
                f"masked input of client {sender} does not match the configuration"
            )
        # Validated: now fold it into the running sum.
        self._ring.add(msg.values)
        self._masked.add(sender)

    def _receive_unmask(self, sender: int, msg: UnmaskResponse) -> None:
        self._check_sender(sender, msg.sender)
        if sender not in self._masked:
            raise ProtocolError(f"client {sender} is not a survivor")
        if self._consortium is not None and sender not in self._survivor_sigs:
            raise ProtocolError(f"client {sender} did not sign the survivor list")
        self._fresh(sender, self._responses)
        sharers = self._graph[sender] & set(self._shares)
        seeds_ok = self._masked & (sharers | {sender})
        keys_ok = self._dropped & sharers
        if {v for v, _ in msg.seed_shares} - seeds_ok or {
            v for v, _ in msg.key_shares
        } - keys_ok:
            raise ProtocolError(
                f"client {sender} sent shares for clients it may not reveal"
            )
        try:
            share_bundles.check_revealed(msg, self._commitments, self._session)
        except CheatingError:
            self._cheaters.add(sender)
            raise
        self._responses[sender] = msg

    def _require(self, count: int, what: str) -> None:
        if count < self._config.threshold:
            self._round = None
            aside = sorted(self._cheaters)
            raise TooFewSurvivors(
                f"only {count} clients {what}; threshold is {self._config.threshold}"
                + (f" (cheaters set aside: {aside})" if aside else "")
            )

    def broadcast(self) -> dict[int, bytes]:
        """Close the current round; return the next round's message per client."""
        rnd = self._round
        if rnd is Round.ADVERTISE_KEYS:
            self._require(len(self._keys), "advertised keys")
            entries = tuple(self._keys[i] for i in sorted(self._keys))
            data = self._open_session(entries)
            self._graph = {u: self._neighbours(u) for u in self._keys}
            self._round = Round.SHARE_KEYS
            return dict.fromkeys(self._keys, data)
        if rnd is Round.SHARE_KEYS:
            self._require(len(self._shares), "shared keys")
            out = {}
            for u in self._shares:
                cts = tuple(
                    (v, self._shares[v][u])
                    for v in sorted(self._shares)
                    if u in self._shares[v]
                )
                commits = tuple((v, self._commitments[v][u]) for v, _ in cts)
                out[u] = ShareRelay(
                    receiver=u, ciphertexts=cts, commitments=commits
                ).to_bytes()
            self._round = Round.MASKED_INPUT
            return out
        if rnd is Round.MASKED_INPUT:
            self._require(len(self._masked), "sent masked inputs")
            self._dropped = frozenset(self._shares) - self._masked
            survivors = tuple(sorted(self._masked))
            if self._consortium is not None:
                # Hardened: the survivors first sign U3 (ConsistencyCheck).
                self._round = Round.CONSISTENCY_CHECK
                request = ConsistencyRequest(survivors=survivors).to_bytes()
                return dict.fromkeys(self._masked, request)
            data = UnmaskRequest(
                survivors=survivors, dropped=tuple(sorted(self._dropped))
            ).to_bytes()
            self._round = Round.UNMASKING
            return dict.fromkeys(self._masked, data)
        if rnd is Round.CONSISTENCY_CHECK:
            self._require(len(self._survivor_sigs), "signed the survivor list")
            self._round = Round.UNMASKING
            return self._signed_unmask_requests()
        raise ProtocolError("no round to broadcast; call unmask() after Unmasking")

    def _neighbours(self, u: int) -> frozenset[int]:
        if self._roster_graph is not None:
            return self._roster_graph.neighbours(u) & set(self._keys)
        return neighbours(self._config, self._session, u, self._keys)

    def _signed_unmask_requests(self) -> dict[int, bytes]:
        # Each survivor gets the signatures it counts: on SecAgg+ those of the
        # share holders of its neighbours (two hops on the roster graph).
        survivors = tuple(sorted(self._masked))
        dropped = tuple(sorted(self._dropped))
        sigs = self._survivor_sigs

        def request(signers: Iterable[int]) -> bytes:
            return SignedUnmaskRequest(
                survivors=survivors,
                dropped=dropped,
                signatures=tuple((i, sigs[i]) for i in sorted(signers)),
            ).to_bytes()

        graph = self._roster_graph
        if graph is None:
            return dict.fromkeys(sigs, request(sigs))
        return {v: request(graph.two_hops(v) & set(sigs)) for v in sigs}

    def _open_session(self, entries: tuple[KeyEntry, ...]) -> bytes:
        # Session id as the clients compute it; the key directory to send.
        digest = self._config.digest()
        if self._consortium is None:
            self._session = crypto.session_id(
                digest, ((e.client_id, e.c_pk, e.s_pk) for e in entries)
            )
            return KeyDirectory(entries=entries).to_bytes()
        signed = tuple(
            SignedKeyEntry(
                client_id=e.client_id,
                c_pk=e.c_pk,
                s_pk=e.s_pk,
                signature=self._advert_sigs[e.client_id],
            )
            for e in entries
        )
        self._session = identity.signed_session_id(
            digest,
            self._model_hash,
            ((e.client_id, e.c_pk, e.s_pk, e.signature) for e in signed),
        )
        return SignedKeyDirectory(entries=signed).to_bytes()

    def unmask(self) -> SecAggAggregate:
        """Close Unmasking: remove all masks and return the decoded sum."""
        if self._round is not Round.UNMASKING:
            raise ProtocolError("unmask() is only valid after the Unmasking round")
        self._require(len(self._responses), "answered the Unmasking request")
        groups, convicted = mask_groups(
            Unmasking(
                threshold=self._config.threshold,
                session=self._session,
                survivors=self._masked,
                dropped=self._dropped,
                neighbours=self._graph,
                s_pks={u: e.s_pk for u, e in self._keys.items()},
                seed_commitments=self._seed_commitments,
                responses=self._responses,
                cheaters=self._cheaters,
            )
        )
        self._cheaters |= convicted
        decoded = self._ring.unmask(groups)
        result = SecAggAggregate(
            ring_sum=decoded.ring_sum,
            weighted_sum=decoded.weighted_sum,
            total_weight=decoded.total_weight,
            clipped=decoded.clipped,
            survivors=frozenset(self._masked),
            dropped=self._dropped,
            responders=frozenset(self._responses),
            cheaters=frozenset(self._cheaters),
        )
        self._round = None
        self._responses = {}
        self._shares = {}
        return result
