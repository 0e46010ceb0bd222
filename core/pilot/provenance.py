"""Where a pilot's results come from, for whoever has to vouch for them.

`Provenance` holds what a data-protection officer checks a report against:
the fedshield version and git commit that ran, a SHA-256 of the data source
and of the final model, each institution's ledger head (the last entry's
sequence number and hash, as the coordinator recorded it) and the verdict
of the ledger audit run in process at the end of the pilot.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import dp

if TYPE_CHECKING:
    from core.interfaces import Trainer
    from core.pilot.data import PilotData

__all__ = [
    "HeadRow",
    "Provenance",
    "audit_ledgers",
    "build_provenance",
    "code_version",
    "sha256_file",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadRow:
    """One institution's ledger head and audit verdict."""

    institution: str
    client_id: str
    seq: int
    entry_hash: str
    verdict: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    """See the module docstring. `audit_ok` is the audit's overall verdict and
    `audit_problems` what it found, one line each."""

    version: str
    commit: str | None
    data_source: str
    data_sha256: str
    model_sha256: str
    heads: tuple[HeadRow, ...]
    heads_file: Path | None
    audit_ok: bool | None
    audit_problems: tuple[str, ...]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> tuple[str, str | None]:
    """The installed fedshield version and, in a git checkout, its commit
    (marked ``+changes`` when the tree differs from it)."""
    try:
        version = metadata.version("fedshield")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return version, None
    try:
        head = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return version, None
    return version, head + ("+changes" if dirty else "")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def audit_ledgers(
    paths: Sequence[Path], heads_file: Path | None
) -> tuple[dict[Path, str], list[str]]:
    """Run the ledger audit in process, against the recorded heads: each
    ledger's verdict, and every problem found."""
    from dp.ledger_audit import Verdict, audit_ledgers

    recorded = (
        dp.read_recorded_heads(heads_file)
        if heads_file is not None and heads_file.exists()
        else {}
    )
    audits, orphans = audit_ledgers(paths, recorded)
    problems = list(orphans)
    for audit in audits:
        problems += [f"{audit.path.name}: {p}" for p in audit.problems]
        if audit.verdict is not Verdict.OK and not audit.problems:
            problems.append(f"{audit.path.name}: {audit.verdict.value}")
    return {a.path: a.verdict.value for a in audits}, problems


def build_provenance(
    data: PilotData,
    source: str,
    model_path: Path,
    trainer: Trainer,
    heads_file: Path,
) -> Provenance:
    """The provenance of a finished run whose final model is at `model_path`;
    `heads_file` holds the ledger heads the coordinator recorded."""
    from core.dp_trainer import DPTrainer, ledger_path

    version, commit = code_version()
    rows: list[HeadRow] = []
    ok: bool | None = None
    problems: list[str] = []
    private = isinstance(trainer, DPTrainer)
    if isinstance(trainer, DPTrainer):
        paths = {
            c.client_id: ledger_path(trainer.ledger_dir, c.client_id)
            for c in data.clients
        }
        verdicts, problems = audit_ledgers(
            [p for p in paths.values() if p.exists()], heads_file
        )
        ok = not problems
        heads = trainer.recorded_heads
        for client, name in zip(data.clients, data.names, strict=True):
            head = heads.get(f"client-{client.client_id}")
            if head is None or head.seq < 0:
                continue
            rows.append(HeadRow(
                institution=name, client_id=f"client-{client.client_id}",
                seq=head.seq, entry_hash=head.entry_hash,
                verdict=verdicts.get(paths[client.client_id], "missing"),
            ))  # fmt: skip
    return Provenance(
        version=version, commit=commit, data_source=source,
        data_sha256=data.source_sha256, model_sha256=sha256_file(model_path),
        heads=tuple(rows), heads_file=heads_file if private else None,
        audit_ok=ok, audit_problems=tuple(problems),
    )  # fmt: skip
