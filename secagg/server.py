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
(:class:`secagg.hardened.HardenedServer`).

A rejected message raises and leaves the server as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from secagg import crypto, shamir
from secagg.backend import select_ring
from secagg.config import Round, SecAggConfig, SecurityMode, neighbours
from secagg.errors import (
    ConfigError,
    InvalidKey,
    ProtocolError,
    ReconstructionError,
    TooFewSurvivors,
)
from secagg.hardened import HardenedServer
from secagg.identity import Consortium
from secagg.masking import MaskList, dropped_pair_masks, self_masks
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

__all__ = ["SecAggAggregate", "SecAggServer"]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SecAggAggregate:
    """What the server learns: sums only, plus who took part.

    ``survivors`` are the clients whose masked input is in the sum (U3);
    ``responders`` those that answered Unmasking.  ``ring_sum`` is on the
    host; ``weighted_sum`` on the server's device.
    """

    ring_sum: RingArray
    weighted_sum: torch.Tensor
    total_weight: int
    clipped: int
    survivors: frozenset[int]
    dropped: frozenset[int]
    responders: frozenset[int]


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
        self._responses[sender] = msg

    def _require(self, count: int, what: str) -> None:
        if count < self._config.threshold:
            self._round = None
            raise TooFewSurvivors(
                f"only {count} clients {what}; threshold is {self._config.threshold}"
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
        self._graph = {
            u: neighbours(self._config, self._session, u, self._adverts)
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
            out[u] = ShareRelay(receiver=u, ciphertexts=cts).to_bytes()
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
        data = self._hardened.unmask_request(self._masked, self._dropped)
        self._round = Round.UNMASKING
        return dict.fromkeys(signers, data)

    def _share_index(self) -> tuple[dict[int, dict[int, int]], ...]:
        # owner -> {share point: value}, for seeds and for mask keys.
        seeds: dict[int, dict[int, int]] = {}
        keys: dict[int, dict[int, int]] = {}
        for responder, msg in self._responses.items():
            for index, entries in ((seeds, msg.seed_shares), (keys, msg.key_shares)):
                for owner, y in entries:
                    index.setdefault(owner, {})[responder + 1] = y
        return seeds, keys

    def _reconstruct(self, owner: int, shares: Mapping[int, int]) -> bytes:
        if len(shares) < self._config.threshold:
            raise TooFewSurvivors(
                f"only {len(shares)} shares for client {owner}; threshold is "
                f"{self._config.threshold}"
            )
        return shamir.reconstruct(shares, self._config.threshold)

    def _mask_removal(self) -> MaskList:
        # The survivors' self masks, then each dropped client's pairwise masks
        # with its surviving neighbours, all as one (keys, signs) list.
        seed_index, key_index = self._share_index()
        seeds = {u: self._reconstruct(u, seed_index.get(u, {})) for u in self._masked}
        keys, signs = self_masks(seeds, self._session)
        for v in sorted(self._dropped):
            s_sk = crypto.private_from_bytes(self._reconstruct(v, key_index.get(v, {})))
            if crypto.public_bytes(s_sk) != self._adverts[v].s_pk:
                raise ReconstructionError(
                    f"reconstructed mask key of client {v} does not match its "
                    "advertised key"
                )
            peers = {u: self._adverts[u].s_pk for u in self._masked & self._graph[v]}
            more = dropped_pair_masks(v, s_sk, peers, self._session)
            keys += more[0]
            signs += more[1]
        return keys, signs

    def unmask(self) -> SecAggAggregate:
        """Close Unmasking: remove all masks and return the decoded sum."""
        if self._round is not Round.UNMASKING:
            raise ProtocolError("unmask() is only valid after the Unmasking round")
        self._require(len(self._responses), "answered the Unmasking request")
        keys, signs = self._mask_removal()
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
        )
        self._round = None
        self._responses = {}
        self._shares = {}
        return result
