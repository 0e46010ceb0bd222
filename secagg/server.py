"""The server side of the protocol: collect a round, then close it.

For each round, feed every client's message to :meth:`SecAggServer.receive`
and call :meth:`SecAggServer.broadcast` to close the round and get the next
round's message for each client; after Unmasking call
:meth:`SecAggServer.unmask`.  Survivor sets shrink monotonically,
U1 ⊇ U2 ⊇ U3 ⊇ U5: a client may vanish before any round, and while at least
``threshold`` remain the server recovers the exact sum of the inputs of U3.

In ``SecurityMode.HARDENED`` the server also needs the consortium registry
and the hash of the model it sent: it verifies every signature it relays, so
an honest server refuses forgeries early (clients verify again anyway), and
runs the ConsistencyCheck round between MaskedInput and Unmasking.

A rejected message raises and leaves the server as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from secagg import crypto, identity, ring, shamir
from secagg.client import mask_sign
from secagg.config import Round, SecAggConfig, SecurityMode, neighbours
from secagg.device_ring import DeviceMaskedInput, MaskGroup, RingBackend, ServerRing
from secagg.errors import (
    ConfigError,
    InvalidKey,
    ProtocolError,
    ReconstructionError,
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

__all__ = ["SecAggAggregate", "SecAggServer"]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SecAggAggregate:
    """What the server learns: sums only, plus who took part.

    ``survivors`` are the clients whose masked input is in the sum (U3);
    ``responders`` those that answered Unmasking.  ``ring_sum`` is on the
    host; ``weighted_sum`` on the server's device (``RingBackend.TORCH``).
    """

    ring_sum: ring.RingArray
    weighted_sum: torch.Tensor
    total_weight: int
    clipped: int
    survivors: frozenset[int]
    dropped: frozenset[int]
    responders: frozenset[int]


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
        self._responses[sender] = msg

    def _require(self, count: int, what: str) -> None:
        if count < self._config.threshold:
            self._round = None
            raise TooFewSurvivors(
                f"only {count} clients {what}; threshold is {self._config.threshold}"
            )

    def broadcast(self) -> dict[int, bytes]:
        """Close the current round; return the next round's message per client."""
        rnd, cfg = self._round, self._config
        if rnd is Round.ADVERTISE_KEYS:
            self._require(len(self._keys), "advertised keys")
            entries = tuple(self._keys[i] for i in sorted(self._keys))
            data = self._open_session(entries)
            self._graph = {
                u: neighbours(cfg, self._session, u, self._keys) for u in self._keys
            }
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
                out[u] = ShareRelay(receiver=u, ciphertexts=cts).to_bytes()
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
            data = SignedUnmaskRequest(
                survivors=tuple(sorted(self._masked)),
                dropped=tuple(sorted(self._dropped)),
                signatures=tuple(sorted(self._survivor_sigs.items())),
            ).to_bytes()
            self._round = Round.UNMASKING
            return dict.fromkeys(self._survivor_sigs, data)
        raise ProtocolError("no round to broadcast; call unmask() after Unmasking")

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

    def _share_index(self) -> tuple[dict[int, dict[int, int]], ...]:
        # owner -> {share point: value}, for seeds and for mask keys.
        seeds: dict[int, dict[int, int]] = {}
        keys: dict[int, dict[int, int]] = {}
        for responder, msg in self._responses.items():
            for index, entries in ((seeds, msg.seed_shares), (keys, msg.key_shares)):
                for owner, y in entries:
                    index.setdefault(owner, {})[responder + 1] = shamir.decode_share(y)
        return seeds, keys

    def _reconstruct(self, owner: int, shares: Mapping[int, int]) -> bytes:
        if len(shares) < self._config.threshold:
            raise TooFewSurvivors(
                f"only {len(shares)} shares for client {owner}; threshold is "
                f"{self._config.threshold}"
            )
        return shamir.reconstruct(shares, self._config.threshold)

    def unmask(self) -> SecAggAggregate:
        """Close Unmasking: remove all masks and return the decoded sum."""
        if self._round is not Round.UNMASKING:
            raise ProtocolError("unmask() is only valid after the Unmasking round")
        self._require(len(self._responses), "answered the Unmasking request")
        seed_index, key_index = self._share_index()
        keys: list[bytes] = []
        signs: list[int] = []
        for u in sorted(self._masked):
            seed = self._reconstruct(u, seed_index.get(u, {}))
            keys.append(crypto.self_mask_key(seed, self._session, u))
            signs.append(-1)
        # One mask group for the self masks, then one per dropped client (all
        # its surviving neighbours at once).
        groups: list[MaskGroup] = [(keys, signs)]
        for v in sorted(self._dropped):
            keys, signs = [], []
            groups.append((keys, signs))
            s_sk = crypto.private_from_bytes(self._reconstruct(v, key_index.get(v, {})))
            if crypto.public_bytes(s_sk) != self._keys[v].s_pk:
                raise ReconstructionError(
                    f"reconstructed mask key of client {v} does not match its "
                    "advertised key"
                )
            for u in sorted(self._masked & self._graph[v]):
                shared = crypto.agree(s_sk, self._keys[u].s_pk)
                keys.append(crypto.pair_mask_key(shared, self._session, u, v))
                # u added mask_sign(u, v) · PRG; take it away.
                signs.append(-mask_sign(u, v))
        decoded = self._ring.unmask(groups)
        result = SecAggAggregate(
            ring_sum=decoded.ring_sum,
            weighted_sum=decoded.weighted_sum,
            total_weight=decoded.total_weight,
            clipped=decoded.clipped,
            survivors=frozenset(self._masked),
            dropped=self._dropped,
            responders=frozenset(self._responses),
        )
        self._round = None
        self._responses = {}
        self._shares = {}
        return result
