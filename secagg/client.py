"""The client side of the protocol: a phase machine, bytes in, bytes out.

Each method validates everything it received before it changes anything; a
failed check raises a named :class:`~secagg.errors.SecAggError`, returns no
bytes, and leaves the client's state object untouched (``_state`` is a frozen
snapshot replaced only on success).  The checks:

* the configuration is within the client's own :class:`ClientPolicy`;
* advertised keys are distinct and valid, its own appear exactly once, and
  there are at least ``threshold`` participants;
* every decrypted share names the expected sender and receiver;
* survivor and dropped lists are disjoint, within the earlier lists, do not
  list the client as dropped, hold at least ``threshold`` survivors and miss
  no more of the cohort than the policy allows, and the client answers one
  Unmasking request per session, never revealing both kinds of share for
  one peer;
* all session secrets are discarded once the client has answered or aborted.

Both modes refuse non-canonical and low-order keys in the directory, naming
their owner (:mod:`secagg.pubkeys`), and check every share received against
the commitment its dealer published (:mod:`secagg.share_bundles`).

The hardened mode (:mod:`secagg.hardened`, :mod:`secagg.threat`) adds the
roster-wide 2t > g + C rule to the policy, signed keys from consortium
members over this client's own model hash and a session nonce it signs once,
SecAgg+ neighbourhoods from the roster and a bound on how many of them may
be missing, the ConsistencyCheck before Unmasking (the client signs U3 and
reveals a peer's share only against ``threshold`` signatures on that list
from the peer's share holders), and one contribution per model in a durable
log.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import crypto, shamir, share_bundles
from secagg.backend import select_ring
from secagg.checks import Neighbourhood, check_directory, check_lists
from secagg.config import MAX_CLIENT_ID, SecAggConfig
from secagg.errors import (
    ConfigError,
    InvalidInput,
    ProtocolError,
    TooFewSurvivors,
)
from secagg.hardened import credentials
from secagg.identity import Consortium
from secagg.masking import client_masks
from secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    KeyEntry,
    MaskedInput,
    ShareRelay,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.participation import ParticipationLog
from secagg.policy import ClientPolicy
from secagg.quantize import QuantizedInput
from secagg.ring import RingBackend
from secagg.signed_messages import ConsistencyRequest

__all__ = ["ClientPhase", "SecAggClient"]


class ClientPhase(enum.Enum):
    """Where a client stands in its session."""

    NEW = "new"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    # Hardened mode only: the survivor list U3 is signed (ConsistencyCheck).
    SIGNED = "signed"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True, kw_only=True)
class _State:
    phase: ClientPhase = ClientPhase.NEW
    c_sk: X25519PrivateKey | None = None
    s_sk: X25519PrivateKey | None = None
    session: bytes = b""
    participants: frozenset[int] = frozenset()
    neighbours: frozenset[int] = frozenset()
    seed: bytes | None = None
    own_shares: tuple[int, int] = (0, 0)  # (share of s_sk, share of b) for me
    channel_keys: Mapping[int, bytes] = field(default_factory=dict)
    pair_keys: Mapping[int, bytes] = field(default_factory=dict)
    held: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    signed: tuple[int, ...] = ()  # the U3 this client signed (hardened)


class SecAggClient:
    """One client of one session (transport-agnostic: bytes in, bytes out).

    Call, in order: :meth:`advertise_keys`, :meth:`share_keys`,
    :meth:`masked_input`, (hardened mode) :meth:`consistency_check`,
    :meth:`unmask`.  ``entropy`` defaults to the OS CSPRNG; inject another
    source only in tests.  ``device`` and ``backend`` choose the ring masking
    runs on (:func:`secagg.backend.select_ring`); the bytes never depend on
    them.  In ``SecurityMode.HARDENED`` the client needs the consortium's
    identity registry, its own Ed25519 ``identity`` key, ``model_hash``, the
    SHA-256 of the model *it* received (never a hash the server asserts), and
    the institution's durable ``participation`` log.
    """

    def __init__(
        self,
        config: SecAggConfig,
        client_id: int,
        *,
        policy: ClientPolicy | None = None,
        entropy: Callable[[int], bytes] = os.urandom,
        device: torch.device | str = "cpu",
        consortium: Consortium | None = None,
        identity: Ed25519PrivateKey | None = None,
        model_hash: bytes | None = None,
        backend: RingBackend | None = None,
        participation: ParticipationLog | None = None,
    ) -> None:
        if isinstance(client_id, bool) or not isinstance(client_id, int):
            raise InvalidInput("client_id must be an int")
        if not 0 <= client_id <= MAX_CLIENT_ID:
            raise InvalidInput(f"client_id must be in [0, {MAX_CLIENT_ID}]")
        if not isinstance(config, SecAggConfig):
            raise ConfigError(f"config must be a SecAggConfig, got {config!r}")
        if policy is not None and not isinstance(policy, ClientPolicy):
            raise ConfigError(f"policy must be a ClientPolicy, got {policy!r}")
        self._hardened = h = credentials(
            config, client_id, consortium, identity, model_hash, participation
        )
        self._policy = policy or ClientPolicy()
        self._nb = Neighbourhood(
            config,
            self._policy,
            client_id,
            graph=None if h is None else h.graph(config),
            roster_size=None if h is None else h.roster_size,
        )
        self._policy.check(config, self._nb.roster_size)
        self._config = config
        self._id = client_id
        self._entropy = entropy
        self._ring = select_ring(config.ring_bits, device, backend)
        self._state = _State()

    @property
    def client_id(self) -> int:
        """This client's id."""
        return self._id

    @property
    def phase(self) -> ClientPhase:
        """The current phase."""
        return self._state.phase

    @property
    def holds_secrets(self) -> bool:
        """Whether any session secret (keys, seed, shares) is still held."""
        s = self._state
        return any(
            (s.c_sk, s.s_sk, s.seed, s.channel_keys, s.pair_keys, s.held)
        ) or s.own_shares != (0, 0)

    def abort(self) -> None:
        """Leave the session and discard every secret."""
        self._state = _State(phase=ClientPhase.ABORTED)

    def _expect(self, phase: ClientPhase, action: str) -> None:
        if self._state.phase is not phase:
            if self._state.phase is ClientPhase.DONE:
                raise ProtocolError(
                    "already answered an Unmasking request in this session"
                )
            raise ProtocolError(f"cannot {action} in phase {self._state.phase.value}")

    # Round 0 ---------------------------------------------------------------

    def advertise_keys(self) -> bytes:
        """Generate the fresh ``c`` and ``s`` key pairs; return AdvertiseKeys."""
        self._expect(ClientPhase.NEW, "advertise keys")
        c_sk = crypto.generate_private_key(self._entropy)
        s_sk = crypto.generate_private_key(self._entropy)
        c_pk, s_pk = crypto.public_bytes(c_sk), crypto.public_bytes(s_sk)
        if self._hardened is not None:
            out = self._hardened.advertise(self._config, self._id, c_pk, s_pk)
        else:
            out = AdvertiseKeys(sender=self._id, c_pk=c_pk, s_pk=s_pk).to_bytes()
        self._state = replace(
            self._state, phase=ClientPhase.ADVERTISED, c_sk=c_sk, s_sk=s_sk
        )
        return out

    # Round 1 ---------------------------------------------------------------

    def share_keys(self, data: bytes) -> bytes:
        """Check the key directory (U1); return encrypted shares for neighbours."""
        self._expect(ClientPhase.ADVERTISED, "share keys")
        st, cfg, me = self._state, self._config, self._id
        if st.c_sk is None or st.s_sk is None:
            raise ProtocolError("key pairs are missing")
        entries, session = self._open_directory(data)
        own = (crypto.public_bytes(st.c_sk), crypto.public_bytes(st.s_sk))
        check_directory(cfg, self._policy, me, entries, own)
        peers = self._nb.peers(session, entries)
        channel_keys, pair_keys = {}, {}
        for v in sorted(peers):
            c_shared = crypto.agree(st.c_sk, entries[v].c_pk)
            s_shared = crypto.agree(st.s_sk, entries[v].s_pk)
            channel_keys[v] = crypto.channel_key(c_shared, session, me, v)
            pair_keys[v] = crypto.pair_mask_key(s_shared, session, me, v)
        seed = self._entropy(shamir.SECRET_BYTES)
        sealed = share_bundles.seal(
            me=me,
            holders=sorted(peers | {me}),
            threshold=cfg.threshold,
            mask_key=st.s_sk.private_bytes_raw(),
            seed=seed,
            session=session,
            channel_keys=channel_keys,
            entropy=self._entropy,
        )
        self._state = replace(
            st,
            phase=ClientPhase.SHARED,
            session=session,
            participants=frozenset(entries),
            neighbours=peers,
            seed=seed,
            own_shares=sealed.own_shares,
            channel_keys=channel_keys,
            pair_keys=pair_keys,
        )
        return sealed.message

    def _open_directory(self, data: bytes) -> tuple[dict[int, KeyEntry], bytes]:
        # The entries and the session id as this client computes it.
        if self._hardened is not None:
            return self._hardened.open_directory(self._config, self._id, data)
        directory = KeyDirectory.from_bytes(data)
        entries = {e.client_id: e for e in directory.entries}
        session = crypto.session_id(
            self._config.digest(),
            ((e.client_id, e.c_pk, e.s_pk) for e in entries.values()),
        )
        return entries, session

    # Round 2 ---------------------------------------------------------------

    def masked_input(self, data: bytes, update: QuantizedInput) -> bytes:
        """Open the shares sent to this client (U2); return the masked vector."""
        self._expect(ClientPhase.SHARED, "send a masked input")
        st, cfg, me = self._state, self._config, self._id
        if st.seed is None:
            raise ProtocolError("self-mask seed is missing")
        if (
            not isinstance(update, QuantizedInput)
            or update.bits != cfg.ring_bits
            or tuple(update.values.shape) != (cfg.encoded_length,)
        ):
            raise InvalidInput("quantised update does not match the configuration")
        held = self._open_relay(data)
        keys, signs = client_masks(me, st.seed, st.session, st.pair_keys, held)
        ring = self._ring
        masked = ring.masked(ring.adopt(update.values), keys, signs)
        out = MaskedInput(
            sender=me,
            bits=ring.bits,
            length=cfg.encoded_length,
            payload=ring.to_wire(masked),
        ).to_bytes()
        if self._hardened is not None:
            # Recorded durably before the masked input can leave: one
            # contribution per model, even across restarts.
            self._hardened.participation.claim_model(self._hardened.model_hash)
        # Pair keys and the seed are not needed any more: only shares remain.
        self._state = replace(
            st,
            phase=ClientPhase.MASKED,
            c_sk=None,
            s_sk=None,
            seed=None,
            channel_keys={},
            pair_keys={},
            held=held,
        )
        return out

    def _open_relay(self, data: bytes) -> dict[int, tuple[int, int]]:
        # The (key share, seed share) each neighbour sent, by sender.
        st, me = self._state, self._id
        relay = ShareRelay.from_bytes(data)
        if relay.receiver != me:
            raise ProtocolError(
                f"share relay is addressed to client {relay.receiver}, not {me}"
            )
        strangers = {v for v, _ in relay.ciphertexts} - st.neighbours
        if strangers:
            raise ProtocolError(
                f"shares relayed from clients that are not my neighbours: "
                f"{sorted(strangers)}"
            )
        self._nb.check({v for v, _ in relay.ciphertexts}, "shared keys")
        if len(relay.ciphertexts) + 1 < self._config.threshold:
            raise TooFewSurvivors(
                f"only {len(relay.ciphertexts) + 1} clients shared keys; threshold "
                f"is {self._config.threshold}"
            )
        return share_bundles.open_relay(relay, me, st.session, st.channel_keys)

    # Round 3 (hardened mode only) ----------------------------------------

    def consistency_check(self, data: bytes) -> bytes:
        """Check the survivor list U3 and sign (session id, U3)."""
        self._expect(ClientPhase.MASKED, "sign a survivor list")
        if self._hardened is None:
            raise ProtocolError("a semi-honest session has no ConsistencyCheck")
        st, me = self._state, self._id
        survivors = ConsistencyRequest.from_bytes(data).survivors
        self._check_lists(set(survivors), set())
        out = self._hardened.sign_survivors(me, st.session, survivors)
        # Shares stay held: they are revealed only against t signatures.
        self._state = replace(st, phase=ClientPhase.SIGNED, signed=survivors)
        return out

    # Round 4 ---------------------------------------------------------------

    def _check_lists(self, survivors: set[int], dropped: set[int]) -> None:
        st = self._state
        check_lists(
            self._config, self._policy, self._id, survivors, dropped,
            participants=st.participants, neighbours=st.neighbours,
            sharers=set(st.held),
        )  # fmt: skip
        self._nb.check(survivors, "survived")

    def unmask(self, data: bytes) -> bytes:
        """Answer the one Unmasking request: b shares of survivors, s_sk shares
        of dropped clients, never both for one client.  In hardened mode only
        for the survivor list it signed, and for each peer only against
        ``threshold`` signatures on it from that peer's share holders."""
        st, me = self._state, self._id
        signatures: dict[int, bytes] = {}
        if self._hardened is None:
            self._expect(ClientPhase.MASKED, "answer an Unmasking request")
            request = UnmaskRequest.from_bytes(data)
        else:
            self._expect(ClientPhase.SIGNED, "answer an Unmasking request")
            request, signatures = self._hardened.open_unmask_request(st.signed, data)
        survivors, dropped = set(request.survivors), set(request.dropped)
        self._check_lists(survivors, dropped)
        sharers = set(st.held)
        if self._hardened is not None:
            self._hardened.check_quorum(
                self._config,
                st.session,
                st.signed,
                signatures,
                {me} | ((survivors | dropped) & sharers),
                lambda u: self._nb.holders(u, st.participants),
            )
        seed_shares = [(me, st.own_shares[1])]
        seed_shares += [(v, st.held[v][1]) for v in survivors & sharers]
        key_shares = [(v, st.held[v][0]) for v in dropped & sharers]
        out = UnmaskResponse(
            sender=me,
            seed_shares=tuple(sorted(seed_shares)),
            key_shares=tuple(sorted(key_shares)),
        ).to_bytes()
        # Answer once, then forget every secret of the session.
        self._state = _State(phase=ClientPhase.DONE)
        return out
