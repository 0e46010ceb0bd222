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
runs the ConsistencyCheck round between MaskedInput and Unmasking
(:class:`secagg.hardened.HardenedServer`), and takes SecAgg+ neighbourhoods
from the roster (:mod:`secagg.threat`).

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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from secagg import crypto, pubkeys, share_bundles
from secagg.backend import select_ring
from secagg.config import Round, SecAggConfig, SecurityMode, neighbours
from secagg.errors import (
    CheatingError,
    ConfigError,
    InvalidKey,
    ProtocolError,
    TooFewSurvivors,
)
from secagg.hardened import HardenedServer
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
from secagg.quantize import dequantize
from secagg.ring import RingArray, RingBackend
from secagg.signed_messages import ConsistencySignature, SignedAdvertiseKeys
from secagg.unmasking import Unmasking, mask_removal

__all__ = ["SecAggAggregate", "SecAggServer"]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SecAggAggregate:
    """What the server learns: sums only, plus who took part.

    ``survivors`` are the clients whose masked input is in the sum (U3);
    ``responders`` those that answered Unmasking; ``cheaters`` those caught
    revealing or dealing shares off their commitments (the sum was decoded
    around them).  ``ring_sum`` is on the host; ``weighted_sum`` on the
    server's device.
    """

    ring_sum: RingArray
    weighted_sum: torch.Tensor
    total_weight: int
    clipped: int
    survivors: frozenset[int]
    dropped: frozenset[int]
    responders: frozenset[int]
    cheaters: frozenset[int] = frozenset()


class SecAggServer:
    """The aggregator of one session (transport-agnostic: bytes in, bytes out).

    ``device`` and ``backend`` choose the ring the sum lives on
    (:func:`secagg.backend.select_ring`); ``chunk_elems`` caps the (key,
    element) pairs of one eager mask batch on the ``TORCH`` back end.
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
        if not isinstance(config, SecAggConfig):
            raise ConfigError(f"config must be a SecAggConfig, got {config!r}")
        hardened = config.mode is SecurityMode.HARDENED
        if hardened != (consortium is not None and model_hash is not None):
            raise ConfigError(
                "the consortium and the model hash are given exactly in hardened mode"
            )
        self._hardened = (
            HardenedServer(config, consortium, model_hash)
            if consortium is not None and model_hash is not None
            else None
        )
        self._config = config
        self._ring = select_ring(
            config.ring_bits, device, backend, chunk_elems=chunk_elems
        )
        self._sum: Any = self._ring.zeros(config.encoded_length)
        self._round: Round | None = Round.ADVERTISE_KEYS
        self._adverts: dict[int, AdvertiseKeys] = {}
        self._session = b""
        self._graph: dict[int, frozenset[int]] = {}
        self._shares: dict[int, dict[int, bytes]] = {}  # sender -> receiver -> ct
        # dealer -> holder -> key ‖ seed share commitments; dealer -> seed's
        self._commitments: dict[int, dict[int, bytes]] = {}
        self._seed_commitments: dict[int, bytes] = {}
        self._cheaters: set[int] = set()
        self._masked: set[int] = set()
        self._responses: dict[int, UnmaskResponse] = {}
        self._dropped: frozenset[int] = frozenset()

    @property
    def round(self) -> Round | None:
        """The round being collected, or ``None`` once the session is over."""
        return self._round

    def receive(self, sender: int, data: bytes) -> None:
        """Accept one client's message for the current round.

        ``sender`` is the id the transport authenticated; it must match the
        id inside the message.
        """
        handlers: dict[Round, Callable[[int, bytes], None]] = {
            Round.ADVERTISE_KEYS: self._receive_keys,
            Round.SHARE_KEYS: self._receive_shares,
            Round.MASKED_INPUT: self._receive_masked,
            Round.CONSISTENCY_CHECK: self._receive_signature,
            Round.UNMASKING: self._receive_unmask,
        }
        if self._round is None:
            raise ProtocolError("the session is over")
        handlers[self._round](sender, data)

    @staticmethod
    def _check_sender(sender: int, claimed: int) -> None:
        if sender != claimed:
            raise ProtocolError(
                f"message from client {sender} claims to come from {claimed}"
            )

    @staticmethod
    def _fresh(sender: int, seen: Mapping[int, object] | set[int]) -> None:
        if sender in seen:
            raise ProtocolError(f"duplicate message from client {sender}")

    def _receive_keys(self, sender: int, data: bytes) -> None:
        msg: AdvertiseKeys
        if self._hardened is None:
            msg = AdvertiseKeys.from_bytes(data)
        else:
            msg = SignedAdvertiseKeys.from_bytes(data)
        self._check_sender(sender, msg.sender)
        self._fresh(sender, self._adverts)
        if isinstance(msg, SignedAdvertiseKeys) and self._hardened is not None:
            self._hardened.verify_advert(msg)
        if len(self._adverts) >= self._config.num_clients:
            raise ProtocolError("more clients than the announced cohort")
        pubkeys.check_public_key(msg.c_pk, sender, "c_pk")
        pubkeys.check_public_key(msg.s_pk, sender, "s_pk")
        seen = {k for e in self._adverts.values() for k in (e.c_pk, e.s_pk)}
        if msg.c_pk == msg.s_pk or msg.c_pk in seen or msg.s_pk in seen:
            raise InvalidKey(f"client {sender} advertised a duplicate public key")
        self._adverts[sender] = msg

    def _receive_shares(self, sender: int, data: bytes) -> None:
        msg = ShareKeys.from_bytes(data)
        self._check_sender(sender, msg.sender)
        if sender not in self._adverts:
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

    def _receive_masked(self, sender: int, data: bytes) -> None:
        msg = MaskedInput.from_bytes(data)
        self._check_sender(sender, msg.sender)
        if sender not in self._shares:
            raise ProtocolError(f"client {sender} did not share keys")
        self._fresh(sender, self._masked)
        cfg = self._config
        if msg.bits != cfg.ring_bits or msg.length != cfg.encoded_length:
            raise ProtocolError(
                f"masked input of client {sender} does not match the configuration"
            )
        # Validated: now fold it into the running sum.
        self._ring.add_(self._sum, self._ring.from_wire(msg.payload, msg.length))
        self._masked.add(sender)

    def _receive_signature(self, sender: int, data: bytes) -> None:
        msg = ConsistencySignature.from_bytes(data)
        self._check_sender(sender, msg.sender)
        if sender not in self._masked:
            raise ProtocolError(f"client {sender} is not a survivor")
        assert self._hardened is not None  # the round exists only then
        self._hardened.accept_signature(msg, self._session, self._masked)

    def _receive_unmask(self, sender: int, data: bytes) -> None:
        msg = UnmaskResponse.from_bytes(data)
        self._check_sender(sender, msg.sender)
        if sender not in self._masked:
            raise ProtocolError(f"client {sender} is not a survivor")
        if self._hardened is not None and sender not in self._hardened.signatures:
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
        closers: dict[Round, Callable[[], dict[int, bytes]]] = {
            Round.ADVERTISE_KEYS: self._close_advertise,
            Round.SHARE_KEYS: self._close_share_keys,
            Round.MASKED_INPUT: self._close_masked_input,
            Round.CONSISTENCY_CHECK: self._close_consistency_check,
        }
        if self._round not in closers:
            raise ProtocolError("no round to broadcast; call unmask() after Unmasking")
        return closers[self._round]()

    def _close_advertise(self) -> dict[int, bytes]:
        self._require(len(self._adverts), "advertised keys")
        adverts = [self._adverts[i] for i in sorted(self._adverts)]
        if self._hardened is not None:
            signed = [a for a in adverts if isinstance(a, SignedAdvertiseKeys)]
            self._session, data = self._hardened.directory(signed)
        else:
            entries = tuple(
                KeyEntry(client_id=a.sender, c_pk=a.c_pk, s_pk=a.s_pk) for a in adverts
            )
            # The session id as the clients compute it.
            self._session = crypto.session_id(
                self._config.digest(), ((e.client_id, e.c_pk, e.s_pk) for e in entries)
            )
            data = KeyDirectory(entries=entries).to_bytes()
        roster = None if self._hardened is None else self._hardened.graph
        self._graph = {
            u: roster.neighbours(u) & set(self._adverts)
            if roster is not None
            else neighbours(self._config, self._session, u, self._adverts)
            for u in self._adverts
        }
        self._round = Round.SHARE_KEYS
        return dict.fromkeys(self._adverts, data)

    def _close_share_keys(self) -> dict[int, bytes]:
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

    def _close_masked_input(self) -> dict[int, bytes]:
        self._require(len(self._masked), "sent masked inputs")
        self._dropped = frozenset(self._shares) - self._masked
        if self._hardened is not None:
            # Hardened: the survivors first sign U3 (ConsistencyCheck).
            self._round = Round.CONSISTENCY_CHECK
            request = self._hardened.consistency_request(self._masked)
            return dict.fromkeys(self._masked, request)
        data = UnmaskRequest(
            survivors=tuple(sorted(self._masked)), dropped=tuple(sorted(self._dropped))
        ).to_bytes()
        self._round = Round.UNMASKING
        return dict.fromkeys(self._masked, data)

    def _close_consistency_check(self) -> dict[int, bytes]:
        assert self._hardened is not None  # the round exists only then
        signers = self._hardened.signatures
        self._require(len(signers), "signed the survivor list")
        self._round = Round.UNMASKING
        return self._hardened.unmask_requests(self._masked, self._dropped)

    def unmask(self) -> SecAggAggregate:
        """Close Unmasking: remove all masks and return the decoded sum."""
        if self._round is not Round.UNMASKING:
            raise ProtocolError("unmask() is only valid after the Unmasking round")
        self._require(len(self._responses), "answered the Unmasking request")
        (keys, signs), convicted = mask_removal(
            Unmasking(
                threshold=self._config.threshold,
                session=self._session,
                survivors=self._masked,
                dropped=self._dropped,
                neighbours=self._graph,
                s_pks={u: a.s_pk for u, a in self._adverts.items()},
                seed_commitments=self._seed_commitments,
                responses=self._responses,
                cheaters=self._cheaters,
            )
        )
        self._cheaters |= convicted
        total = self._ring.masked(self._sum, keys, signs)
        decoded = dequantize(self._ring, total, self._config)
        result = SecAggAggregate(
            ring_sum=self._ring.to_host(total),
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
