"""Ledger line format: entries, canonical JSON, hash chain, verification.

This module is the reference reader of the format specified in
``dp/LEDGER_FORMAT.md``: :func:`read_ledger` accepts a file only if every line
is a canonical JSON entry whose ``entry_sha256`` matches its content, whose
``seq`` is its position and whose ``prev_sha256`` is its predecessor's hash.
It names the first bad line (1-based) otherwise.  It reads format versions 1
(no neighbouring relation recorded: read as add/remove-one) and 2.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dp.accounting import Mechanism, StepRun
from dp.config import SUPPORTED_RELATIONS, Accountant, Neighbouring
from dp.errors import InvalidLedgerEntryError, LedgerCorruptedError, PrivacyError

__all__ = [
    "GENESIS_SHA256",
    "LEDGER_VERSION",
    "READABLE_VERSIONS",
    "LedgerEntry",
    "Mechanism",
    "canonical_json",
    "check_entry_ranges",
    "read_ledger",
]

#: The version this package writes.
LEDGER_VERSION = 2
#: Versions :func:`read_ledger` accepts.
READABLE_VERSIONS = (1, 2)
#: ``prev_sha256`` of the first entry.
GENESIS_SHA256 = "0" * 64


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
    """One committed charge.  See ``dp/LEDGER_FORMAT.md`` for each field.

    ``clip_bound`` is the mechanism's clipping bound: the per-example gradient
    norm C for DP-SGD steps, the per-example loss bound B for a loss release
    (written ``max_grad_norm`` in version-1 lines).  Version-1 lines carry no
    ``neighbouring`` field; they are read as ``Neighbouring.ADD_REMOVE``.
    """

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
    neighbouring: Neighbouring
    epsilon: float
    epsilon_budget: float
    clip_bound: float
    timestamp: str
    prev_sha256: str

    @property
    def step_run(self) -> StepRun:
        """The accounting event this entry charges for."""
        return StepRun(
            self.noise_multiplier, self.sample_rate, self.steps, self.mechanism
        )

    def content_json(self) -> dict[str, Any]:
        """All fields of this entry's version except ``entry_sha256``."""
        fields: dict[str, Any] = {
            "version": self.version,
            "seq": self.seq,
            "client_id": self.client_id,
            "round": self.round,
            "mechanism": self.mechanism.value,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "delta": self.delta,
            "accountant": self.accountant.value,
            "epsilon": self.epsilon,
            "epsilon_budget": self.epsilon_budget,
            "timestamp": self.timestamp,
            "prev_sha256": self.prev_sha256,
        }
        if self.version == 1:
            fields["max_grad_norm"] = self.clip_bound
        else:
            fields["neighbouring"] = self.neighbouring.value
            fields["clip_bound"] = self.clip_bound
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
)
_STR_FIELDS = ("client_id", "timestamp", "prev_sha256", "entry_sha256")
_COMMON = frozenset(
    (*_INT_FIELDS, *_FLOAT_FIELDS, *_STR_FIELDS, "mechanism", "accountant")
)
_FIELDS = {
    1: _COMMON | {"max_grad_norm"},
    2: _COMMON | {"clip_bound", "neighbouring"},
}


def _check_types(obj: dict[str, Any], clip_key: str) -> None:
    for name in _INT_FIELDS:
        if type(obj[name]) is not int:
            raise InvalidLedgerEntryError(
                f"{name} must be an integer; found {obj[name]!r}"
            )
    for name in (*_FLOAT_FIELDS, clip_key):
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


def _enum_field(kind: Any, obj: dict[str, Any], name: str) -> Any:
    try:
        return kind(obj[name])
    except ValueError:
        accepted = ", ".join(repr(m.value) for m in kind)
        raise InvalidLedgerEntryError(
            f"{name} must be one of {accepted}; found {obj[name]!r}"
        ) from None


def _entry_from_json(obj: object) -> tuple[LedgerEntry, str]:
    """Parse one decoded line; raise :class:`InvalidLedgerEntryError` if bad."""
    if not isinstance(obj, dict):
        raise InvalidLedgerEntryError("not a JSON object")
    version = obj.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise InvalidLedgerEntryError(
            f"version must be one of {READABLE_VERSIONS}; found {version!r}"
        )
    expected = _FIELDS[version]
    if set(obj) != expected:
        missing = sorted(expected - set(obj))
        extra = sorted(set(obj) - expected)
        raise InvalidLedgerEntryError(
            f"wrong fields for version {version} (missing {missing}, "
            f"unexpected {extra})"
        )
    clip_key = "max_grad_norm" if version == 1 else "clip_bound"
    _check_types(obj, clip_key)
    entry = LedgerEntry(
        version=version,
        seq=obj["seq"],
        client_id=obj["client_id"],
        round=obj["round"],
        mechanism=_enum_field(Mechanism, obj, "mechanism"),
        noise_multiplier=float(obj["noise_multiplier"]),
        sample_rate=float(obj["sample_rate"]),
        steps=obj["steps"],
        delta=float(obj["delta"]),
        accountant=_enum_field(Accountant, obj, "accountant"),
        neighbouring=(
            Neighbouring.ADD_REMOVE
            if version == 1
            else _enum_field(Neighbouring, obj, "neighbouring")
        ),
        epsilon=float(obj["epsilon"]),
        epsilon_budget=float(obj["epsilon_budget"]),
        clip_bound=float(obj[clip_key]),
        timestamp=obj["timestamp"],
        prev_sha256=obj["prev_sha256"],
    )
    check_entry_ranges(entry)
    return entry, obj["entry_sha256"]


def check_entry_ranges(e: LedgerEntry) -> None:
    """Raise :class:`InvalidLedgerEntryError` if a field of ``e`` is out of range."""
    if e.version not in READABLE_VERSIONS:
        raise InvalidLedgerEntryError(
            f"version must be one of {READABLE_VERSIONS}; found {e.version}"
        )
    for name, kind in (
        ("mechanism", Mechanism),
        ("accountant", Accountant),
        ("neighbouring", Neighbouring),
    ):
        if not isinstance(getattr(e, name), kind):
            raise InvalidLedgerEntryError(
                f"{name} must be a {kind.__name__}; found {getattr(e, name)!r}"
            )
    if not isinstance(e.client_id, str) or not e.client_id:
        raise InvalidLedgerEntryError("client_id must be a non-empty string")
    if e.round < 0 or e.seq < 0:
        raise InvalidLedgerEntryError(
            f"round and seq must be >= 0; found {e.round}, {e.seq}"
        )
    try:
        e.step_run  # noqa: B018 - validates σ, q, steps and the mechanism
    except PrivacyError as exc:
        raise InvalidLedgerEntryError(str(exc)) from None
    if (
        not 0 < e.delta < 1
        or e.epsilon < 0
        or e.epsilon_budget <= 0
        or e.clip_bound <= 0
    ):
        raise InvalidLedgerEntryError(
            "delta must be in (0, 1), epsilon >= 0, epsilon_budget > 0 and "
            f"clip_bound > 0; found {e.delta!r}, {e.epsilon!r}, "
            f"{e.epsilon_budget!r}, {e.clip_bound!r}"
        )
    if e.neighbouring not in SUPPORTED_RELATIONS[e.accountant]:
        raise InvalidLedgerEntryError(
            f"accountant {e.accountant.value!r} cannot state ε under neighbouring "
            f"{e.neighbouring.value!r}"
        )
    if e.version == 1 and (
        e.accountant is Accountant.PLD
        or e.mechanism is not Mechanism.POISSON_SUBSAMPLED_GAUSSIAN
    ):
        raise InvalidLedgerEntryError(
            "a version-1 entry records DP-SGD steps under the 'rdp' or 'prv' "
            f"accountant; found {e.mechanism.value!r} under {e.accountant.value!r}"
        )


def read_ledger(path: Path) -> tuple[LedgerEntry, ...]:
    """Read and fully verify a ledger file; raise at the first bad line.

    Raises :class:`LedgerCorruptedError` (with the 1-based line number) for a
    torn last line, bytes that are not canonical JSON, a wrong ``entry_sha256``
    (an edited field), a ``seq`` out of order (a deleted, duplicated or moved
    line), a broken ``prev_sha256`` link, or an entry whose client, δ,
    accountant or relation differs from the first entry's, whose round goes
    backwards or whose version is older than its predecessor's.
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
        entry = _verified_line(str(path), index, raw, prev)
        if entries:
            _check_consistent(str(path), index + 1, entries[0], entries[-1], entry)
        entries.append(entry)
        prev = entry.entry_sha256
    return tuple(entries)


def _verified_line(path: str, index: int, raw: bytes, prev: str) -> LedgerEntry:
    lineno = index + 1
    try:
        entry, claimed = _entry_from_json(json.loads(raw.decode("ascii")))
    except (ValueError, UnicodeDecodeError, OverflowError, RecursionError) as exc:
        # OverflowError: an integer too large for a float field;
        # RecursionError: absurdly nested JSON.  Both are just bad lines.
        raise LedgerCorruptedError(path, lineno, f"unreadable entry: {exc}") from exc
    if claimed != entry.entry_sha256:
        raise LedgerCorruptedError(
            path,
            lineno,
            "entry_sha256 does not match the entry's content (a field was edited)",
        )
    if entry.line_bytes() != raw + b"\n":
        raise LedgerCorruptedError(path, lineno, "not in canonical form")
    if entry.seq != index:
        raise LedgerCorruptedError(
            path,
            lineno,
            f"seq is {entry.seq}, expected {index}: a line was deleted, "
            "duplicated or moved",
        )
    if entry.prev_sha256 != prev:
        raise LedgerCorruptedError(
            path,
            lineno,
            "prev_sha256 does not match the previous entry's entry_sha256 "
            "(hash chain broken)",
        )
    return entry


def _check_consistent(
    path: str, lineno: int, first: LedgerEntry, last: LedgerEntry, e: LedgerEntry
) -> None:
    for name in ("client_id", "delta", "accountant", "neighbouring"):
        if getattr(e, name) != getattr(first, name):
            raise LedgerCorruptedError(
                path,
                lineno,
                f"{name} is {getattr(e, name)!r} but line 1 has "
                f"{getattr(first, name)!r}: one ledger holds one client's charges "
                "at one δ, accountant and neighbouring relation",
            )
    if e.round < last.round:
        raise LedgerCorruptedError(
            path, lineno, f"round {e.round} comes after round {last.round}"
        )
    if e.version < last.version:
        raise LedgerCorruptedError(
            path,
            lineno,
            f"version {e.version} comes after version {last.version}",
        )
