"""Ledger heads: what a coordinator records so a rolled-back ledger is caught.

The hash chain makes every edit of a ledger's *past* detectable, but not the
loss of its newest lines: a ledger cut to its first 5 of 15 entries is still a
valid chain, and a client resuming from it would re-spend the privacy of the
10 lost charges.  So the coordinator records each client's :class:`LedgerHead`
(the ``seq`` and ``entry_sha256`` of its last entry) every round, outside the
client.  A ledger is *behind* a recorded head when it is shorter than
``seq + 1`` entries, or its entry at ``seq`` has another hash (it was replaced
by a different history).  A ledger *ahead* of the recorded head is fine: the
client charged rounds the coordinator has not logged yet.

Recorded heads travel as JSON (see ``dp/LEDGER_FORMAT.md``)::

    {"ledger_heads": {"client-3": {"seq": 14, "entry_hash": "9f0c…"}}}

one such object per line (the coordinator's ``metrics.jsonl`` qualifies: its
lines without ``ledger_heads`` are skipped) or one JSON document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dp.errors import InvalidLedgerHeadError, LedgerRollbackError
from dp.ledger_format import GENESIS_SHA256, LedgerEntry

__all__ = [
    "HEADS_KEY",
    "LedgerHead",
    "check_not_behind",
    "head_of",
    "read_recorded_heads",
]

#: The key under which a JSON record carries ledger heads by client id.
HEADS_KEY = "ledger_heads"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class LedgerHead:
    """The last entry of a ledger: its ``seq`` and its ``entry_sha256``.

    An empty ledger's head is ``LedgerHead(-1, GENESIS_SHA256)``.
    """

    seq: int
    entry_hash: str

    def __post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < -1:
            raise InvalidLedgerHeadError(
                f"seq must be an integer >= -1; found {self.seq!r}"
            )
        if not isinstance(self.entry_hash, str) or not _HEX64.fullmatch(
            self.entry_hash
        ):
            raise InvalidLedgerHeadError(
                f"entry_hash must be 64 lowercase hex digits; found {self.entry_hash!r}"
            )
        if self.seq == -1 and self.entry_hash != GENESIS_SHA256:
            raise InvalidLedgerHeadError(
                "the empty head (seq -1) has the genesis hash (64 zeros); found "
                f"{self.entry_hash!r}"
            )

    def __str__(self) -> str:
        return f"seq={self.seq} entry_hash={self.entry_hash}"

    def to_json(self) -> dict[str, Any]:
        """``{"seq": …, "entry_hash": …}``, for a coordinator's round record."""
        return {"seq": self.seq, "entry_hash": self.entry_hash}

    @classmethod
    def from_json(cls, obj: object) -> LedgerHead:
        """Parse :meth:`to_json`'s output; raise :class:`InvalidLedgerHeadError`."""
        if not isinstance(obj, Mapping) or set(obj) != {"seq", "entry_hash"}:
            raise InvalidLedgerHeadError(
                'a ledger head must be {"seq": int, "entry_hash": hex}; '
                f"found {obj!r}"
            )
        return cls(obj["seq"], obj["entry_hash"])


def head_of(entries: Sequence[LedgerEntry]) -> LedgerHead:
    """The head of a ledger holding ``entries``."""
    if not entries:
        return LedgerHead(-1, GENESIS_SHA256)
    return LedgerHead(entries[-1].seq, entries[-1].entry_sha256)


def check_not_behind(
    entries: Sequence[LedgerEntry],
    expected: LedgerHead,
    *,
    client_id: str,
    path: Path | str,
) -> None:
    """Raise :class:`LedgerRollbackError` if ``entries`` are behind ``expected``."""
    if not isinstance(expected, LedgerHead):
        raise InvalidLedgerHeadError(
            f"expected must be a LedgerHead; found {expected!r}"
        )
    if expected.seq < 0:
        return
    found = head_of(entries)
    if len(entries) <= expected.seq:
        why = (
            f"it has {len(entries)} entries, the recorded head is entry {expected.seq}"
        )
    elif entries[expected.seq].entry_sha256 != expected.entry_hash:
        why = f"its entry {expected.seq} is not the recorded one"
    else:
        return
    raise LedgerRollbackError(
        client_id=client_id, path=str(path), found=found, expected=expected, why=why
    )


def _records(text: str) -> list[Any]:
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InvalidLedgerHeadError(
                f"line {lineno} is not JSON ({exc.msg}); expected JSON Lines of "
                f'objects with a "{HEADS_KEY}" member, or one JSON document'
            ) from None
    return records


def read_recorded_heads(path: Path) -> dict[str, tuple[LedgerHead, ...]]:
    """Every head recorded in ``path``, by client id, in file order.

    Raises ``OSError`` when the file cannot be read, and
    :class:`InvalidLedgerHeadError` naming the problem for a file that is not
    JSON / JSON Lines, a ``ledger_heads`` member that is not an object
    of heads, or a file that records no head at all.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidLedgerHeadError(f"{path} is not UTF-8 text: {exc}") from None
    heads: dict[str, list[LedgerHead]] = {}
    for record in _records(text):
        if not isinstance(record, dict) or HEADS_KEY not in record:
            continue
        by_client = record[HEADS_KEY]
        if not isinstance(by_client, dict):
            raise InvalidLedgerHeadError(
                f'"{HEADS_KEY}" must map client ids to heads; found {by_client!r}'
            )
        for client_id, head in by_client.items():
            heads.setdefault(client_id, []).append(LedgerHead.from_json(head))
    if not heads:
        raise InvalidLedgerHeadError(
            f'{path} records no ledger head (no object with a "{HEADS_KEY}" member)'
        )
    return {c: tuple(h) for c, h in heads.items()}
