"""What travels between the coordinator and a node, and its exact shape.

Every stage of a round is one Flower message each way, of message type
:data:`MESSAGE_TYPE`, whose content is one ``ConfigRecord`` named
:data:`RECORD`.  A request carries the stage, the round, the announced
cohort size (first stage) and a payload: the global model (float32, little
endian, public) in the first stage, else the bytes ``secagg``'s server
produced for that node.  A reply carries the stage, the round, the node's
consortium id, the bytes ``secagg``'s client produced, and the head of the
node's privacy ledger (entry count and SHA-256, public by design).  Nothing
else is accepted: no float update, no example count, no metric.

Decoding checks every key and type and raises :class:`WireError` otherwise;
nothing is unpickled.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

import secagg
from core.flower.errors import WireError

__all__ = [
    "MESSAGE_TYPE",
    "RECORD",
    "LedgerHead",
    "Stage",
    "StageReply",
    "StageRequest",
    "reply_fields",
    "request_fields",
]

#: Flower message type of every fedshield message (category "train").
MESSAGE_TYPE = "train.fedshield_secagg"
#: Name of the one ConfigRecord in every message's RecordDict.
RECORD = "fedshield"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class Stage(enum.Enum):
    """The stages of one FedAvg round over secure aggregation."""

    # Model in; local training; AdvertiseKeys out.
    TRAIN = "train"
    SHARE_KEYS = "share-keys"
    MASKED_INPUT = "masked-input"
    # Hardened mode only: the signed survivor list.
    CONSISTENCY_CHECK = "consistency-check"
    UNMASKING = "unmasking"

    @property
    def secagg_round(self) -> secagg.Round:
        """The secagg round whose message the node answers with."""
        return _ROUNDS[self]


_ROUNDS = {
    Stage.TRAIN: secagg.Round.ADVERTISE_KEYS,
    Stage.SHARE_KEYS: secagg.Round.SHARE_KEYS,
    Stage.MASKED_INPUT: secagg.Round.MASKED_INPUT,
    Stage.CONSISTENCY_CHECK: secagg.Round.CONSISTENCY_CHECK,
    Stage.UNMASKING: secagg.Round.UNMASKING,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerHead:
    """The public head of a node's privacy ledger (no ε, no sample rate)."""

    entries: int
    sha256: str

    def __post_init__(self) -> None:
        if isinstance(self.entries, bool) or not isinstance(self.entries, int):
            raise WireError("ledger entry count must be an int")
        if self.entries < 0 or not _SHA256_HEX.fullmatch(self.sha256):
            raise WireError("ledger head must be a count >= 0 and a SHA-256 hex")


@dataclass(frozen=True, slots=True, kw_only=True)
class StageRequest:
    """Coordinator → node: one stage of one round."""

    stage: Stage
    round_index: int
    payload: bytes
    cohort: int = 0
    # The first stage names the session: the coordinator's fresh nonce, which
    # every node binds into the session id (so adverts cannot be replayed).
    nonce: bytes = b""

    def to_fields(self) -> dict[str, str | int | bytes]:
        """The ConfigRecord fields."""
        return {
            "stage": self.stage.value,
            "round": self.round_index,
            "cohort": self.cohort,
            # Hex: the node agent's local socket frames its fields as JSON.
            "nonce": self.nonce.hex(),
            "payload": self.payload,
        }

    @classmethod
    def from_fields(cls, data: Mapping[str, object]) -> StageRequest:
        """Decode; :class:`WireError` on any deviation."""
        _exact(data, request_fields(), "request")
        return cls(
            stage=_stage(data["stage"]),
            round_index=_count(data["round"], "round"),
            cohort=_count(data["cohort"], "cohort"),
            nonce=_hex(data["nonce"], "nonce"),
            payload=_bytes(data["payload"], "payload"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StageReply:
    """Node → coordinator: the secagg bytes of one stage, and the ledger head."""

    stage: Stage
    round_index: int
    institution: int
    payload: bytes
    ledger: LedgerHead | None = None

    def to_fields(self) -> dict[str, str | int | bytes]:
        """The ConfigRecord fields (an absent ledger is count -1)."""
        head = self.ledger
        return {
            "stage": self.stage.value,
            "round": self.round_index,
            "institution": self.institution,
            "payload": self.payload,
            "ledger-entries": -1 if head is None else head.entries,
            "ledger-head": "" if head is None else head.sha256,
        }

    @classmethod
    def from_fields(cls, data: Mapping[str, object]) -> StageReply:
        """Decode; :class:`WireError` on any deviation."""
        _exact(data, reply_fields(), "reply")
        entries = data["ledger-entries"]
        head = data["ledger-head"]
        if not isinstance(head, str):
            raise WireError("reply field 'ledger-head' must be a string")
        ledger = None
        if entries != -1:
            ledger = LedgerHead(entries=_count(entries, "ledger-entries"), sha256=head)
        return cls(
            stage=_stage(data["stage"]),
            round_index=_count(data["round"], "round"),
            institution=_count(data["institution"], "institution"),
            payload=_bytes(data["payload"], "payload"),
            ledger=ledger,
        )


def request_fields() -> frozenset[str]:
    """Every field a request has, and no other."""
    return frozenset({"stage", "round", "cohort", "nonce", "payload"})


def reply_fields() -> frozenset[str]:
    """Every field a reply has, and no other."""
    return frozenset(
        {"stage", "round", "institution", "payload", "ledger-entries", "ledger-head"}
    )


def _exact(data: Mapping[str, object], wanted: frozenset[str], what: str) -> None:
    keys = set(data)
    if keys != wanted:
        extra, missing = sorted(keys - wanted), sorted(wanted - keys)
        raise WireError(
            f"{what} fields must be exactly {sorted(wanted)}; extra {extra}, "
            f"missing {missing}"
        )


def _stage(value: object) -> Stage:
    try:
        return Stage(value)
    except ValueError:
        raise WireError(
            "stage must be one of "
            + ", ".join(s.value for s in Stage)
            + f"; found {value!r}"
        ) from None


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WireError(f"field {name!r} must be an integer >= 0; found {value!r}")
    return value


def _hex(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise WireError(f"request field {name!r} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise WireError(f"request field {name!r} is not hex") from None


def _bytes(value: object, name: str) -> bytes:
    if not isinstance(value, bytes):
        raise WireError(f"field {name!r} must be bytes; found {type(value).__name__}")
    return value
