"""Ledger line format: entries, canonical JSON, hash chain, verification.

This module is the reference reader of the format specified in
``dp/LEDGER_FORMAT.md``: :func:`read_ledger` accepts a file only if every line
is a canonical JSON entry whose ``entry_sha256`` matches its content, whose
``seq`` is its position and whose ``prev_sha256`` is its predecessor's hash.
It names the first bad line (1-based) otherwise.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dp.accounting import StepRun
from dp.config import Accountant
from dp.errors import InvalidLedgerEntryError, LedgerCorruptedError

__all__ = [
    "GENESIS_SHA256",
    "LEDGER_VERSION",
    "LedgerEntry",
    "Mechanism",
    "canonical_json",
    "check_entry_ranges",
    "read_ledger",
]

LEDGER_VERSION = 1
#: ``prev_sha256`` of the first entry.
GENESIS_SHA256 = "0" * 64


class Mechanism(enum.Enum):
    """What one ledger entry charges for."""

    POISSON_SUBSAMPLED_GAUSSIAN = "poisson_subsampled_gaussian"


def canonical_json(obj: dict[str, Any]) -> bytes:
    """Canonical bytes: sorted keys, no spaces, ASCII only, no NaN/Infinity.

    Floats are written by Python's ``repr`` (the shortest string that reads
    back to the same IEEE-754 double), integers as integers.
    """
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    """One committed charge.  See ``dp/LEDGER_FORMAT.md`` for each field."""

    version: int
    seq: int
    client_id: str
    round: int
    mechanism: Mechanism
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    accountant: Accountant
    epsilon: float
    epsilon_budget: float
    max_grad_norm: float
    timestamp: str
    prev_sha256: str

    @property
    def step_run(self) -> StepRun:
        """The accounting event this entry charges for."""
        return StepRun(self.noise_multiplier, self.sample_rate, self.steps)

    def content_json(self) -> dict[str, Any]:
        """All fields except ``entry_sha256``, enums as their values."""
        fields = asdict(self)
        fields["mechanism"] = self.mechanism.value
        fields["accountant"] = self.accountant.value
        return fields

    @property
    def entry_sha256(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`content_json`."""
        return _sha256_hex(canonical_json(self.content_json()))

    def line_bytes(self) -> bytes:
        """The exact bytes of this entry's line, newline included."""
        return (
            canonical_json({**self.content_json(), "entry_sha256": self.entry_sha256})
            + b"\n"
        )


_INT_FIELDS = ("version", "seq", "round", "steps")
_FLOAT_FIELDS = (
    "noise_multiplier",
    "sample_rate",
    "delta",
    "epsilon",
    "epsilon_budget",
    "max_grad_norm",
)
_STR_FIELDS = ("client_id", "timestamp", "prev_sha256", "entry_sha256")
_ALL_FIELDS = frozenset(
    (*_INT_FIELDS, *_FLOAT_FIELDS, *_STR_FIELDS, "mechanism", "accountant")
)


def _entry_from_json(obj: object) -> tuple[LedgerEntry, str]:
    """Parse one decoded line; raise :class:`InvalidLedgerEntryError` if bad."""
    if not isinstance(obj, dict):
        raise InvalidLedgerEntryError("not a JSON object")
    keys = set(obj)
    if keys != _ALL_FIELDS:
        missing = sorted(_ALL_FIELDS - keys)
        extra = sorted(keys - _ALL_FIELDS)
        raise InvalidLedgerEntryError(
            f"wrong fields (missing {missing}, unexpected {extra})"
        )
    for name in _INT_FIELDS:
        if type(obj[name]) is not int:
            raise InvalidLedgerEntryError(
                f"{name} must be an integer; found {obj[name]!r}"
            )
    for name in _FLOAT_FIELDS:
        value = obj[name]
        if type(value) not in (int, float) or not math.isfinite(value):
            raise InvalidLedgerEntryError(
                f"{name} must be a finite number; found {value!r}"
            )
    for name in _STR_FIELDS:
        if not isinstance(obj[name], str):
            raise InvalidLedgerEntryError(
                f"{name} must be a string; found {obj[name]!r}"
            )
    entry = LedgerEntry(
        version=obj["version"],
        seq=obj["seq"],
        client_id=obj["client_id"],
        round=obj["round"],
        mechanism=Mechanism(obj["mechanism"]),
        noise_multiplier=float(obj["noise_multiplier"]),
        sample_rate=float(obj["sample_rate"]),
        steps=obj["steps"],
        delta=float(obj["delta"]),
        accountant=Accountant(obj["accountant"]),
        epsilon=float(obj["epsilon"]),
        epsilon_budget=float(obj["epsilon_budget"]),
        max_grad_norm=float(obj["max_grad_norm"]),
        timestamp=obj["timestamp"],
        prev_sha256=obj["prev_sha256"],
    )
    check_entry_ranges(entry)
    return entry, obj["entry_sha256"]


def check_entry_ranges(e: LedgerEntry) -> None:
    """Raise :class:`InvalidLedgerEntryError` if a field of ``e`` is out of range."""
    if e.version != LEDGER_VERSION:
        raise InvalidLedgerEntryError(
            f"version must be {LEDGER_VERSION}; found {e.version}"
        )
    if not e.client_id:
        raise InvalidLedgerEntryError("client_id must be a non-empty string")
    if e.round < 0 or e.steps < 1:
        raise InvalidLedgerEntryError(
            f"round must be >= 0 and steps >= 1; found {e.round}, {e.steps}"
        )
    if e.noise_multiplier <= 0 or not 0 < e.sample_rate <= 1:
        raise InvalidLedgerEntryError(
            "noise_multiplier must be > 0 and sample_rate in (0, 1]; found "
            f"{e.noise_multiplier!r}, {e.sample_rate!r}"
        )
    if not 0 < e.delta < 1 or e.epsilon < 0 or e.epsilon_budget <= 0:
        raise InvalidLedgerEntryError(
            "delta must be in (0, 1), epsilon >= 0 and epsilon_budget > 0; found "
            f"{e.delta!r}, {e.epsilon!r}, {e.epsilon_budget!r}"
        )


def read_ledger(path: Path) -> tuple[LedgerEntry, ...]:
    """Read and fully verify a ledger file; raise at the first bad line.

    Raises :class:`LedgerCorruptedError` (with the 1-based line number) for a
    torn last line, bytes that are not canonical JSON, a wrong ``entry_sha256``
    (an edited field), a ``seq`` out of order (a deleted, duplicated or moved
    line), a broken ``prev_sha256`` link, or an entry whose client, δ or
    accountant differs from the first entry's, or whose round goes backwards.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, as it must
    if tail:
        raise LedgerCorruptedError(
            str(path),
            len(lines) + 1,
            "torn last line (no trailing newline): a write was interrupted and "
            "this entry was never committed; inspect it, then remove that partial "
            "line by hand to resume",
        )
    entries: list[LedgerEntry] = []
    prev = GENESIS_SHA256
    for index, raw in enumerate(lines):
        lineno = index + 1
        try:
            entry, claimed = _entry_from_json(json.loads(raw.decode("ascii")))
        except (ValueError, UnicodeDecodeError, OverflowError, RecursionError) as exc:
            # OverflowError: an integer too large for a float field;
            # RecursionError: absurdly nested JSON.  Both are just bad lines.
            raise LedgerCorruptedError(
                str(path), lineno, f"unreadable entry: {exc}"
            ) from exc
        if claimed != entry.entry_sha256:
            raise LedgerCorruptedError(
                str(path),
                lineno,
                "entry_sha256 does not match the entry's content (a field was edited)",
            )
        if entry.line_bytes() != raw + b"\n":
            raise LedgerCorruptedError(str(path), lineno, "not in canonical form")
        if entry.seq != index:
            raise LedgerCorruptedError(
                str(path),
                lineno,
                f"seq is {entry.seq}, expected {index}: a line was deleted, "
                "duplicated or moved",
            )
        if entry.prev_sha256 != prev:
            raise LedgerCorruptedError(
                str(path),
                lineno,
                "prev_sha256 does not match the previous entry's entry_sha256 "
                "(hash chain broken)",
            )
        if entries:
            _check_consistent(str(path), lineno, entries[0], entries[-1], entry)
        entries.append(entry)
        prev = entry.entry_sha256
    return tuple(entries)


def _check_consistent(
    path: str, lineno: int, first: LedgerEntry, last: LedgerEntry, e: LedgerEntry
) -> None:
    for name in ("client_id", "delta", "accountant"):
        if getattr(e, name) != getattr(first, name):
            raise LedgerCorruptedError(
                path,
                lineno,
                f"{name} is {getattr(e, name)!r} but line 1 has "
                f"{getattr(first, name)!r}: one ledger holds one client's charges "
                "at one δ and accountant",
            )
    if e.round < last.round:
        raise LedgerCorruptedError(
            path, lineno, f"round {e.round} comes after round {last.round}"
        )
