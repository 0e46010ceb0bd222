"""Session configuration, client policy, rounds, and the neighbour graph seam.

:class:`SecAggConfig` holds every privacy-relevant parameter of one session
and refuses, at construction, any combination whose sum could overflow the
ring.  Its :meth:`SecAggConfig.digest` is bound into the session id, so
clients with different configurations cannot complete a session together.

>>> SecAggConfig(num_clients=4, threshold=3, vector_length=10).encoded_length
12
"""

from __future__ import annotations

import enum
import hashlib
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from secagg import ring
from secagg.errors import ConfigError, PolicyViolation

__all__ = [
    "MAX_CLIENT_ID",
    "ClientPolicy",
    "Round",
    "SecAggConfig",
    "SecurityMode",
    "neighbours",
]

# Shamir evaluates at id + 1, and ids travel as uint32.
MAX_CLIENT_ID = 2**32 - 2
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
    # Ed25519 identities and a ConsistencyCheck round; refused until built.
    HARDENED = "hardened"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggConfig:
    """Public, privacy-relevant parameters of one secure aggregation session.

    Args:
        num_clients: cohort size n announced for the session.
        threshold: t, the Shamir threshold and minimum number of survivors.
        vector_length: length of each client's float vector (model update plus
            any extra scalars the caller appended).
        bits: k, the ring is Z_2^k (8..62).  Each coordinate travels as
            ceil(k/8) little-endian bytes (k = 32: 4 bytes), unused high bits
            zero.
        clip: c, values are clipped to [-c, c] (and counted) before rounding.
        value_bits: signed bits of one quantised coordinate (sign included).
        max_weight: W_max, public cap on a client's secret integer weight.
        mode: threat model; only ``SEMI_HONEST`` is implemented.
        context: public bytes bound into the session id (e.g. a model hash).
    """

    num_clients: int
    threshold: int
    vector_length: int
    bits: int = 32
    clip: float = 1.0
    value_bits: int = 16
    max_weight: int = 1
    mode: SecurityMode = SecurityMode.SEMI_HONEST
    context: bytes = b""

    def __post_init__(self) -> None:
        for name in ("num_clients", "threshold", "vector_length", "bits"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"{name} must be an int")
        for name in ("value_bits", "max_weight"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"{name} must be an int")
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
        if not ring.MIN_BITS <= self.bits <= ring.MAX_BITS:
            raise ConfigError(
                f"bits must be in [{ring.MIN_BITS}, {ring.MAX_BITS}], got {self.bits}"
            )
        if not 2 <= self.value_bits <= self.bits:
            raise ConfigError(
                f"value_bits must be in [2, bits={self.bits}], got {self.value_bits}"
            )
        if self.max_weight < 1:
            raise ConfigError(f"max_weight must be >= 1, got {self.max_weight}")
        if not (isinstance(self.clip, float | int) and math.isfinite(self.clip)):
            raise ConfigError(f"clip must be a finite number, got {self.clip!r}")
        if self.clip <= 0:
            raise ConfigError(f"clip must be > 0, got {self.clip}")
        if not isinstance(self.mode, SecurityMode):
            raise ConfigError("mode must be a SecurityMode")
        if self.mode is not SecurityMode.SEMI_HONEST:
            raise ConfigError(
                "SecurityMode.HARDENED (signatures and ConsistencyCheck) is not "
                "implemented yet; use SecurityMode.SEMI_HONEST"
            )
        if not isinstance(self.context, bytes) or len(self.context) > 2**16:
            raise ConfigError("context must be bytes of at most 65536")
        self._check_bit_budget()

    def _check_bit_budget(self) -> None:
        weight_bits = self.max_weight.bit_length()
        cohort_bits = (self.num_clients - 1).bit_length()  # ceil(log2 n)
        need = self.value_bits + weight_bits + cohort_bits + 1
        if need > self.bits:
            raise ConfigError(
                f"bit budget exceeded: value_bits ({self.value_bits}) + bits of "
                f"max_weight ({weight_bits}) + ceil(log2 num_clients) "
                f"({cohort_bits}) + 1 = {need} > bits ({self.bits}); raise bits "
                f"(at most {ring.MAX_BITS}) or lower value_bits, max_weight or "
                "num_clients"
            )
        # The secure sum of clipped-coordinate counts shares the ring too.
        if self.num_clients * self.vector_length >= 1 << (self.bits - 1):
            raise ConfigError(
                f"num_clients × vector_length ({self.num_clients} × "
                f"{self.vector_length}) must be < 2^(bits-1) so the count of "
                "clipped coordinates cannot overflow; raise bits"
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
            self.bits,
            self.value_bits,
            self.max_weight,
            float(self.clip),
        )
        mode = self.mode.value.encode()
        return hashlib.sha256(
            packed
            + struct.pack("<B", len(mode))
            + mode
            + struct.pack("<I", len(self.context))
            + self.context
        ).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientPolicy:
    """What a client accepts, independent of what the server announces.

    Args:
        min_cohort: smallest ``num_clients`` the client joins.
        min_threshold: smallest absolute threshold accepted.
        min_threshold_fraction: threshold must be at least this share of n.
        max_weight_cap: largest ``max_weight`` the client accepts.
    """

    min_cohort: int = 2
    min_threshold: int = 2
    min_threshold_fraction: float = 0.5
    max_weight_cap: int = 2**20

    def __post_init__(self) -> None:
        if self.min_cohort < 1 or self.min_threshold < 1:
            raise ConfigError("min_cohort and min_threshold must be >= 1")
        if not 0.0 <= self.min_threshold_fraction <= 1.0:
            raise ConfigError("min_threshold_fraction must be in [0, 1]")

    def check(self, config: SecAggConfig) -> None:
        """Raise :class:`PolicyViolation` unless ``config`` is acceptable."""
        if config.num_clients < self.min_cohort:
            raise PolicyViolation(
                f"cohort of {config.num_clients} is below this client's minimum "
                f"of {self.min_cohort}"
            )
        need = max(
            self.min_threshold,
            math.ceil(self.min_threshold_fraction * config.num_clients),
        )
        if config.threshold < need:
            raise PolicyViolation(
                f"threshold {config.threshold} is below this client's minimum of "
                f"{need} for a cohort of {config.num_clients}"
            )
        if config.max_weight > self.max_weight_cap:
            raise PolicyViolation(
                f"max_weight {config.max_weight} exceeds this client's cap of "
                f"{self.max_weight_cap}"
            )


def neighbours(
    config: SecAggConfig, session: bytes, me: int, participants: Iterable[int]
) -> frozenset[int]:
    """The clients ``me`` shares with and masks against, computed locally.

    Every "who are my neighbours" question goes through here, and nobody ever
    takes a neighbour list from the server.  Today this is the complete graph;
    a SecAgg+ Harary graph (``secagg.graph``) plugs in here alone.
    """
    del config, session  # The complete graph depends on neither.
    others = frozenset(participants)
    return others - {me}
