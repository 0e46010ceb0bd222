"""Where a pilot's privacy ledgers live, and what the coordinator records of them.

A ledger records what an institution has spent; it belongs to the
institution, not to one run. A pilot's ledgers therefore live in
``[privacy] ledger_dir`` (default ``ledgers/<run.name>``, relative to where
``fedshield run`` is started), never inside a run folder, and every run of
the same pilot continues them.

The coordinator keeps, next to that folder, the last ledger head (sequence
number and entry hash) it recorded for each institution:
``<ledger_dir>.heads.json``, one JSON document ``{"ledger_heads": {...}}`` in
the format ``fedshield audit --heads`` reads. It is rewritten atomically and
fsync'd after every round, and read back at the next run, so an institution
whose ledger is behind what the coordinator saw (truncated, emptied,
restored from an old copy) is refused.

>>> from core.pilot.schema import parse_config
>>> folder = ledger_dir(parse_config({"run": {"name": "Arizona hospitals/2026"}}))
>>> str(folder), heads_path(folder).name
('ledgers/Arizona-hospitals-2026', 'Arizona-hospitals-2026.heads.json')
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import dp
from core.dp_trainer import DPTrainer
from core.errors import ConfigError
from core.pilot.schema import PilotConfig
from core.reporting import ConsoleReporter, RoundRecord

__all__ = ["HeadRecorder", "heads_path", "ledger_dir", "read_heads", "write_heads"]


def ledger_dir(cfg: PilotConfig) -> Path:
    """The folder of this pilot's ledgers (see the module docstring)."""
    if cfg.privacy.ledger_dir:
        return Path(cfg.privacy.ledger_dir)
    # The run's name as one safe path component.
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", cfg.run.name).strip("-.") or "pilot"
    return Path("ledgers") / name


def heads_path(ledgers: Path) -> Path:
    """The coordinator's heads file for the ledgers in `ledgers`."""
    return ledgers.with_name(ledgers.name + ".heads.json")


def read_heads(path: Path) -> dict[str, dp.LedgerHead]:
    """The last head recorded per client (none before a pilot's first run)."""
    if not path.exists():
        return {}
    try:
        recorded = dp.read_recorded_heads(path)
    except (dp.InvalidLedgerHeadError, OSError) as exc:
        raise ConfigError(
            f"privacy.ledger_dir: the coordinator's heads file {path} cannot be "
            f"read ({exc}); restore it from a backup (it is what detects a "
            "rolled-back ledger), never delete it"
        ) from None
    return {client: heads[-1] for client, heads in recorded.items()}


def write_heads(path: Path, heads: Mapping[str, dp.LedgerHead]) -> None:
    """Replace the heads file atomically: a crash leaves the old or the new."""
    body = {
        "ledger_heads": {c: h.to_json() for c, h in sorted(heads.items())}
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(body, handle, indent=1)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself must survive a crash
    finally:
        os.close(directory)


class HeadRecorder(ConsoleReporter):
    """The coordinator's record of the ledger heads, kept every round.

    Wraps the run's reporter: before a round is reported, the latest head of
    every institution (`DPTrainer.recorded_heads`) is written to the heads
    file, durably; the round's ``metrics.jsonl`` line carries the heads of the
    round's participants (`DPTrainer.round_details`).
    """

    def __init__(self, inner: ConsoleReporter, trainer: DPTrainer, path: Path) -> None:
        super().__init__(quiet=True)
        self._inner = inner
        self._trainer = trainer
        self._path = path
        self._by_round: list[tuple[int, tuple[tuple[str, int, str], ...]]] = []

    @property
    def by_round(self) -> tuple[tuple[int, tuple[tuple[str, int, str], ...]], ...]:
        """Per reported round: (round, ((client, seq, entry hash), …))."""
        return tuple(self._by_round)

    def start(self, *, first_round: int, total_rounds: int) -> None:
        """Start the wrapped reporter."""
        self._inner.start(first_round=first_round, total_rounds=total_rounds)

    def round(self, record: RoundRecord) -> None:
        """Record the heads, then report the round."""
        write_heads(self._path, self._trainer.recorded_heads)
        heads = sorted(record.details.get("ledger_heads", {}).items())
        rows = tuple((c, h["seq"], h["entry_hash"]) for c, h in heads)
        self._by_round.append((record.round_index, rows))
        self._inner.round(record)

    def message(self, text: str) -> None:
        """Pass a message on."""
        self._inner.message(text)

    def close(self) -> None:
        """Close the wrapped reporter."""
        self._inner.close()
