"""The per-client privacy ledger: append-only, hash-chained, fsync'd JSON Lines.

Each line is one charge: a run of DP-SGD steps a client committed to, with the
ε it has spent *after* that run.  The format (fields, canonical serialization,
hash chain, failure modes) is specified in ``dp/LEDGER_FORMAT.md``; this
module is its only writer and its reference reader.

Guarantees:

* **Durable before release.** :meth:`PrivacyLedger.append` returns only after
  the line is written with one ``write`` to an ``O_APPEND`` descriptor and both
  the file and its directory are fsync'd.  A crash (even ``kill -9``) after it
  returns cannot lose the entry.
* **Check, then commit.** Everything is validated before the file is touched;
  a failed write is truncated back, so a failed append leaves the bytes as they
  were.
* **Tamper-evident.** Every line carries the SHA-256 of its own canonical
  content and of its predecessor's; :func:`read_ledger` refuses a file whose
  chain does not verify and names the first bad line (1-based).  A torn last
  line (a write interrupted by power loss) is refused the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
from pathlib import Path

from dp.accounting import StepRun
from dp.config import Accountant, Neighbouring
from dp.errors import (
    BudgetExceededError,
    InvalidLedgerEntryError,
    LedgerError,
    LedgerMismatchError,
    LedgerNotFoundError,
)
from dp.ledger_format import (
    LEDGER_VERSION,
    LedgerEntry,
    check_entry_ranges,
    read_ledger,
)
from dp.ledger_heads import LedgerHead, head_of

__all__ = ["PrivacyLedger"]


def _timestamp(now: dt.datetime | None) -> str:
    """ISO 8601 UTC with microseconds (``now`` defaults to the current time)."""
    return (now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="microseconds")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PrivacyLedger:
    """One client's ledger, verified on open and extended only by :meth:`append`."""

    __slots__ = ("_entries", "_path", "_size")

    def __init__(self, path: Path, entries: tuple[LedgerEntry, ...], size: int) -> None:
        # Use :meth:`open`; this constructor trusts its arguments.
        self._path = path
        self._entries = entries
        self._size = size

    @classmethod
    def open(cls, path: Path | str, *, missing_ok: bool = False) -> PrivacyLedger:
        """Open and verify the ledger at ``path``.

        A missing file is an error unless ``missing_ok`` (a client's first
        start), in which case the ledger is empty and the file is created by
        the first :meth:`append`.
        """
        p = Path(path)
        if not p.exists():
            if not missing_ok:
                raise LedgerNotFoundError(f"ledger {p} not found")
            return cls(p, (), 0)
        entries = read_ledger(p)
        return cls(p, entries, p.stat().st_size)

    @property
    def path(self) -> Path:
        """Where the ledger lives."""
        return self._path

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """All committed entries, oldest first."""
        return self._entries

    @property
    def history(self) -> list[StepRun]:
        """The accounting history: one :class:`StepRun` per entry."""
        return [e.step_run for e in self._entries]

    @property
    def head(self) -> LedgerHead:
        """The last entry's seq and hash (``seq=-1`` and the genesis hash if empty).

        Record it outside the client (the coordinator's round log) to make the
        loss of the newest entries detectable: see :mod:`dp.ledger_heads`.
        """
        return head_of(self._entries)

    @property
    def head_sha256(self) -> str:
        """``entry_sha256`` of the last entry (genesis value when empty)."""
        return self.head.entry_hash

    @property
    def epsilon_spent(self) -> float:
        """ε recorded by the last entry (0 when empty)."""
        return self._entries[-1].epsilon if self._entries else 0.0

    def verify(self) -> None:
        """Re-read the file and check it is exactly what this object committed."""
        on_disk = read_ledger(self._path) if self._path.exists() else ()
        if on_disk != self._entries:
            raise LedgerError(
                f"ledger {self._path} changed on disk: it has {len(on_disk)} valid "
                f"entries, this client committed {len(self._entries)}"
            )

    def check_owner(
        self,
        *,
        client_id: str,
        delta: float,
        accountant: Accountant,
        neighbouring: Neighbouring,
    ) -> None:
        """Refuse a valid ledger that belongs to another client or setting."""
        if not self._entries:
            return
        first = self._entries[0]
        found = (first.client_id, first.delta, first.accountant, first.neighbouring)
        if found != (client_id, delta, accountant, neighbouring):
            raise LedgerMismatchError(
                f"ledger {self._path} holds client_id={found[0]!r}, "
                f"delta={found[1]!r}, accountant={found[2].name}, "
                f"neighbouring={found[3].name}; this client has "
                f"client_id={client_id!r}, delta={delta!r}, "
                f"accountant={accountant.name}, neighbouring={neighbouring.name}"
            )

    def append(
        self,
        *,
        client_id: str,
        round_idx: int,
        run: StepRun,
        delta: float,
        accountant: Accountant,
        neighbouring: Neighbouring,
        epsilon: float,
        epsilon_budget: float,
        clip_bound: float,
        now: dt.datetime | None = None,
    ) -> LedgerEntry:
        """Durably commit one charge and return it (see the module guarantees).

        Raises :class:`BudgetExceededError` if ``epsilon`` exceeds the budget
        (a last line of defence; clients check first) and :class:`LedgerError`
        if the file changed since this object last read or wrote it.
        """
        self._check_charge(
            client_id=client_id,
            round_idx=round_idx,
            delta=delta,
            accountant=accountant,
            neighbouring=neighbouring,
            epsilon=epsilon,
            epsilon_budget=epsilon_budget,
        )
        try:
            entry = LedgerEntry(
                version=LEDGER_VERSION,
                seq=len(self._entries),
                client_id=client_id,
                round=round_idx,
                mechanism=run.mechanism,
                noise_multiplier=float(run.noise_multiplier),
                sample_rate=float(run.sample_rate),
                steps=int(run.steps),
                delta=float(delta),
                accountant=accountant,
                neighbouring=neighbouring,
                epsilon=float(epsilon),
                epsilon_budget=float(epsilon_budget),
                clip_bound=float(clip_bound),
                timestamp=_timestamp(now),
                prev_sha256=self.head.entry_hash,
            )
            check_entry_ranges(entry)
        except (InvalidLedgerEntryError, TypeError, ValueError) as exc:
            raise LedgerError(f"refusing to write an invalid entry: {exc}") from exc
        self._write(entry.line_bytes())
        self._entries = (*self._entries, entry)
        return entry

    def _check_charge(
        self,
        *,
        client_id: str,
        round_idx: int,
        delta: float,
        accountant: Accountant,
        neighbouring: Neighbouring,
        epsilon: float,
        epsilon_budget: float,
    ) -> None:
        """Refuse a charge for another owner, over budget, or for a past round."""
        self.check_owner(
            client_id=client_id,
            delta=delta,
            accountant=accountant,
            neighbouring=neighbouring,
        )
        if epsilon > epsilon_budget:
            raise BudgetExceededError(
                client_id=client_id,
                round_idx=round_idx,
                epsilon_spent=self.epsilon_spent,
                epsilon_projected=epsilon,
                epsilon_budget=epsilon_budget,
            )
        if self._entries and round_idx < self._entries[-1].round:
            raise LedgerError(
                f"round_idx must be >= the last charged round "
                f"({self._entries[-1].round}); found {round_idx}"
            )

    def _write(self, line: bytes) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # One writer per ledger: a second process appending concurrently
            # would fork the chain, so take an exclusive lock for the append.
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size != self._size:
                raise LedgerError(
                    f"ledger {self._path} changed on disk since it was read "
                    f"({size} bytes, expected {self._size}); reopen it"
                )
            try:
                written = 0
                while written < len(line):
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            except OSError:
                # Check-then-commit: undo a partial line so the file stays valid.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                raise
        finally:
            os.close(fd)
        # The directory entry must be durable too, or a crash right after the
        # first append could lose the whole (new) file.
        _fsync_dir(self._path.parent)
        self._size += len(line)
