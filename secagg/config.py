"""Session configuration, rounds, and the neighbour graph seam.

:class:`SecAggConfig` holds every privacy-relevant parameter of one session
and refuses, at construction, any combination whose sum could overflow the
ring.  Its :meth:`SecAggConfig.digest` is bound into the session id, so
clients with different configurations cannot complete a session together.

>>> cfg = SecAggConfig(num_clients=4, threshold=3, vector_length=10, max_weight=1)
>>> cfg.encoded_length
12
"""

from __future__ import annotations

import bisect
import enum
import functools
import hashlib
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from secagg import graph as graph_params
from secagg import limits, threat
from secagg.errors import ConfigError, ProtocolError

__all__ = [
    "COMPLETE_GRAPH_BELOW",
    "MAX_CLIENT_ID",
    "NONCE_BYTES",
    "GraphKind",
    "Round",
    "SecAggConfig",
    "SecurityMode",
    "neighbours",
    "threat_model",
]

# Shamir evaluates at id + 1, and ids travel as uint32.
MAX_CLIENT_ID = 2**32 - 2
#: Length of a session nonce.
NONCE_BYTES = 32
_CONFIG_VERSION = 1


class Round(enum.IntEnum):
    """Protocol rounds in order; ``drop`` schedules name the round a client misses."""

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    # Only in SecurityMode.HARDENED (signed survivor list); a semi-honest
    # session goes straight from MASKED_INPUT to UNMASKING.
    CONSISTENCY_CHECK = 3
    UNMASKING = 4


class SecurityMode(enum.Enum):
    """Threat model of a session."""

    SEMI_HONEST = "semi-honest"
    # Malicious coordinator: Ed25519 identities (secagg.identity), the model
    # hash in the session id, and a signed survivor list (ConsistencyCheck).
    HARDENED = "hardened"


class GraphKind(enum.Enum):
    """Who masks against and shares with whom."""

    COMPLETE = "complete"
    # SecAgg+ (Bell et al., CCS 2020): relabelled Harary graph (secagg.graph).
    HARARY = "harary"


def threat_model(mode: SecurityMode) -> graph_params.ThreatModel:
    """The adversary the SecAgg+ analysis assumes for a session mode: a
    hardened session's server may also lie about dropouts."""
    if mode is SecurityMode.HARDENED:
        return graph_params.ThreatModel.SEMI_MALICIOUS
    return graph_params.ThreatModel.SEMI_HONEST


#: Below this cohort size :meth:`SecAggConfig.for_cohort` keeps the complete
#: graph (the cohort size at which SecAgg+ takes over by default).
COMPLETE_GRAPH_BELOW = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggConfig:
    """Public, privacy-relevant parameters of one secure aggregation session.

    Args:
        num_clients: cohort size n announced for the session.
        threshold: t, the Shamir threshold and minimum number of survivors.
        vector_length: length of each client's float vector (model update plus
            any extra scalars the caller appended).
        ring_bits: k, the ring is Z_2^k (``MIN_RING_BITS`` to
            ``MAX_RING_BITS``).  Each coordinate travels as ceil(k/8)
            little-endian bytes (k = 32: 4 bytes), unused high bits zero.
        clip: c, values are clipped to [-c, c] (and counted) before rounding.
        value_bits: signed bits of one quantised coordinate (sign included).
        max_weight: W_max, public bound on a client's secret integer weight;
            a larger weight is refused (:class:`~secagg.errors.InvalidInput`),
            never capped.  Required: it sizes the ring's bit budget.
        mode: threat model.  ``HARDENED`` adds Ed25519 identities, the
            model hash in the session id and the ConsistencyCheck round.
        context: public bytes bound into the session id.  In hardened mode
            each client also binds the hash of the model *it* received.
        graph: ``COMPLETE`` (everyone is everyone's neighbour) or ``HARARY``
            (SecAgg+: a relabelled Harary graph of ``degree``, derived by
            every party from the session id; ``threshold`` then counts share
            holders among a client's neighbours and itself).
        degree: neighbours per client for ``HARARY``; 0 for ``COMPLETE``.
            :meth:`for_cohort` computes degree and threshold from (n, α, δ).
            In hardened mode the Harary graph spans the consortium roster
            (:class:`secagg.threat.RosterGraph`), not the advertisers.
        session_nonce: 32 public bytes that name this session, fresh from the
            OS CSPRNG by default.  Bound into the digest, hence into every
            signed advert: a hardened client advertises keys for a nonce once
            (:mod:`secagg.participation`), so no advert replays elsewhere.
    """

    num_clients: int
    threshold: int
    vector_length: int
    max_weight: int
    ring_bits: int = 32
    clip: float = 1.0
    value_bits: int = 16
    mode: SecurityMode = SecurityMode.SEMI_HONEST
    context: bytes = b""
    graph: GraphKind = GraphKind.COMPLETE
    degree: int = 0
    # Not part of ==: two sessions with the same parameters compare equal;
    # their digests, hence their session ids and signed adverts, differ.
    session_nonce: bytes = field(
        default_factory=lambda: os.urandom(NONCE_BYTES), compare=False
    )

    def __post_init__(self) -> None:
        for name in (
            "num_clients", "threshold", "vector_length", "ring_bits",
            "value_bits", "max_weight", "degree",
        ):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an int, got {value!r}")
        if not 1 <= self.num_clients <= MAX_CLIENT_ID + 1:
            raise ConfigError(f"num_clients must be >= 1, got {self.num_clients}")
        if not 1 <= self.threshold <= self.num_clients:
            raise ConfigError(
                f"threshold must be in [1, num_clients={self.num_clients}], "
                f"got {self.threshold}"
            )
        if not 1 <= self.vector_length < 2**32 - 2:
            raise ConfigError(
                f"vector_length must be in [1, 2^32 - 3], got {self.vector_length}"
            )
        if not limits.MIN_RING_BITS <= self.ring_bits <= limits.MAX_RING_BITS:
            raise ConfigError(
                f"ring_bits must be in [{limits.MIN_RING_BITS}, "
                f"{limits.MAX_RING_BITS}], got {self.ring_bits}"
            )
        if not 2 <= self.value_bits <= self.ring_bits:
            raise ConfigError(
                f"value_bits must be in [2, ring_bits={self.ring_bits}], "
                f"got {self.value_bits}"
            )
        if self.max_weight < 1:
            raise ConfigError(f"max_weight must be >= 1, got {self.max_weight}")
        if not (isinstance(self.clip, float | int) and math.isfinite(self.clip)):
            raise ConfigError(f"clip must be a finite number, got {self.clip!r}")
        if self.clip <= 0:
            raise ConfigError(f"clip must be > 0, got {self.clip}")
        if not isinstance(self.mode, SecurityMode):
            raise ConfigError("mode must be a SecurityMode")
        self._check_graph()
        nonce = self.session_nonce
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise ConfigError(f"session_nonce must be {NONCE_BYTES} bytes")
        if not isinstance(self.context, bytes) or len(self.context) > 2**16:
            raise ConfigError("context must be bytes of at most 65536")
        self._check_bit_budget()

    def _check_graph(self) -> None:
        if not isinstance(self.graph, GraphKind):
            raise ConfigError("graph must be a GraphKind")
        if self.graph is GraphKind.COMPLETE:
            if self.degree != 0:
                raise ConfigError("degree is only set for GraphKind.HARARY")
            return
        if self.degree < 2 or self.degree % 2:
            raise ConfigError(
                f"a Harary graph needs an even degree >= 2, got {self.degree}"
            )
        if self.threshold > self.group_size:
            raise ConfigError(
                f"threshold {self.threshold} exceeds the {self.group_size} share "
                f"holders of a degree-{self.degree} graph (neighbours and self)"
            )

    def _check_bit_budget(self) -> None:
        weight_bits = self.max_weight.bit_length()
        cohort_bits = (self.num_clients - 1).bit_length()  # ceil(log2 n)
        need = self.value_bits + weight_bits + cohort_bits + 1
        if need > self.ring_bits:
            raise ConfigError(
                f"bit budget exceeded: value_bits ({self.value_bits}) + bits of "
                f"max_weight ({weight_bits}) + ceil(log2 num_clients) "
                f"({cohort_bits}) + 1 = {need} > ring_bits ({self.ring_bits}); "
                f"raise ring_bits (at most {limits.MAX_RING_BITS}) or lower "
                "value_bits, max_weight or num_clients"
            )
        # The secure sum of clipped-coordinate counts shares the ring too.
        if self.num_clients * self.vector_length >= 1 << (self.ring_bits - 1):
            raise ConfigError(
                f"num_clients × vector_length ({self.num_clients} × "
                f"{self.vector_length}) must be < 2^(ring_bits-1) so the count of "
                "clipped coordinates cannot overflow; raise ring_bits"
            )

    @property
    def scale(self) -> float:
        """Quantisation scale: ``clip`` maps to ``2^(value_bits-1) - 1``."""
        return float((1 << (self.value_bits - 1)) - 1) / float(self.clip)

    @property
    def encoded_length(self) -> int:
        """Masked vector length: the values, then the weight, then the clip count."""
        return self.vector_length + 2

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding of every field (bound into sessions)."""
        packed = struct.pack(
            "<BIIIBBQd",
            _CONFIG_VERSION,
            self.num_clients,
            self.threshold,
            self.vector_length,
            self.ring_bits,
            self.value_bits,
            self.max_weight,
            float(self.clip),
        )
        mode = self.mode.value.encode()
        graph = self.graph.value.encode()
        return hashlib.sha256(
            packed
            + struct.pack("<B", len(mode))
            + mode
            + struct.pack("<I", len(self.context))
            + self.context
            + struct.pack("<B", len(graph))
            + graph
            + struct.pack("<I", self.degree)
            + self.session_nonce
        ).digest()

    @property
    def group_size(self) -> int:
        """Most share holders of one secret: n, or degree + 1 in a Harary graph."""
        if self.graph is GraphKind.COMPLETE:
            return self.num_clients
        return min(self.num_clients, self.degree + 1)

    @classmethod
    def for_cohort(
        cls,
        *,
        num_clients: int,
        vector_length: int,
        corrupt_fraction: float,
        dropout_fraction: float,
        max_weight: int,
        complete_below: int = COMPLETE_GRAPH_BELOW,
        mode: SecurityMode = SecurityMode.SEMI_HONEST,
        ring_bits: int = 32,
        clip: float = 1.0,
        value_bits: int = 16,
        context: bytes = b"",
        roster_size: int | None = None,
    ) -> SecAggConfig:
        """Graph, degree and threshold computed from (n, α, δ), never guessed.

        Cohorts below ``complete_below`` get the complete graph with the
        highest threshold that ``dropout_fraction`` allows; larger ones a
        SecAgg+ Harary graph from :func:`secagg.graph.secaggplus_parameters`.
        The hardened mode counts colluders over the consortium roster
        (``roster_size`` members, default the cohort) and builds the
        worst-case parameters of :func:`secagg.threat.hardened_parameters`.
        Raises :class:`~secagg.errors.GraphParameterError` when no secure and
        correct parameters exist.
        """
        kind, degree = GraphKind.COMPLETE, 0
        if mode is SecurityMode.HARDENED:
            found_h = threat.hardened_parameters(
                roster_size=num_clients if roster_size is None else roster_size,
                cohort=num_clients,
                corrupt_fraction=corrupt_fraction,
                dropout_fraction=dropout_fraction,
                complete_below=complete_below,
            )
            threshold, degree = found_h.threshold, found_h.degree
            kind = GraphKind.HARARY if degree else GraphKind.COMPLETE
            return cls(
                num_clients=num_clients, threshold=threshold,
                vector_length=vector_length, ring_bits=ring_bits, clip=clip,
                value_bits=value_bits, max_weight=max_weight, mode=mode,
                context=context, graph=kind, degree=degree,
            )  # fmt: skip
        rates = (num_clients, corrupt_fraction, dropout_fraction, threat_model(mode))
        if num_clients < complete_below:
            threshold = graph_params.complete_graph_threshold(*rates)
        else:
            found = graph_params.secaggplus_parameters(*rates)
            kind, degree, threshold = GraphKind.HARARY, found.degree, found.threshold
        return cls(
            num_clients=num_clients, threshold=threshold, vector_length=vector_length,
            ring_bits=ring_bits, clip=clip, value_bits=value_bits,
            max_weight=max_weight,
            mode=mode, context=context, graph=kind, degree=degree,
        )  # fmt: skip


@functools.lru_cache(maxsize=8)
def _harary(n: int, degree: int, session: bytes) -> tuple[frozenset[int], ...]:
    # One graph per session, shared by every lookup (the server asks n times).
    return graph_params.harary_graph(n, degree, session)


def neighbours(
    config: SecAggConfig, session: bytes, me: int, participants: Iterable[int]
) -> frozenset[int]:
    """The clients ``me`` shares with and masks against, computed locally.

    Every "who are my neighbours" question goes through here, and nobody ever
    takes a neighbour list from the server.  For ``GraphKind.HARARY`` the
    advertised ids, sorted, are positions 0..n-1 of
    :func:`secagg.graph.harary_graph`, whose relabelling is derived from the
    session id (a hash of every listed key, never a value the server sends).
    A hardened session's SecAgg+ graph spans the roster instead
    (:class:`secagg.threat.RosterGraph`), which nothing the server sends can
    move.
    """
    others = frozenset(participants)
    if config.graph is GraphKind.COMPLETE:
        return others - {me}
    order = sorted(others)
    pos = bisect.bisect_left(order, me)
    if pos == len(order) or order[pos] != me:
        raise ProtocolError(f"client {me} is not among the participants")
    graph = _harary(len(order), config.degree, session)
    return frozenset(order[p] for p in graph[pos])
