"""Accounting audit of privacy ledgers: verify, recompute ε independently, report.

For each ledger the audit

1. verifies the hash chain (:func:`dp.read_ledger`); an empty file fails;
2. recomputes ε under the relation the ledger records (version-1 ledgers
   record none and are read as add/remove-one; the audit says so):

   * with the ledger's **own accountant**, at the end of every round (the
     points the ε plot shows, the head included; PRV ledgers at the head
     only, a PRV evaluation being slow), cached across ledgers:
     recorded ≥ recomputed·(1 − 1e-6) − 1e-9.  It is the same deterministic
     computation, so only last-bit differences are legitimate;
   * **independently**, at the head, with dp-accounting's PLD in its
     optimistic, privacy-buckets form (:func:`dp.accounting.epsilon_lower_bound`):
     a certified lower bound on the true ε, so no honest accountant records
     less.  The check is recorded ≥ lower − :data:`INDEPENDENT_TOLERANCE`, a
     float-rounding allowance; the gap recorded − lower (about
     steps × 2.5e-4 for DP-SGD) is the discretisation slack of the lower
     bound, shown in the table;

3. checks every entry's ε (recorded, or recomputed where it is larger) against
   the budget recorded in that entry;
4. with recorded heads (:func:`dp.ledger_heads.read_recorded_heads`), checks
   the ledger is not behind any head the coordinator recorded for its client,
   and that every client with a recorded head has a ledger among those
   audited.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dp.accounting import epsilon_for_history, epsilon_lower_bound
from dp.config import Accountant
from dp.errors import AccountingError, LedgerError, LedgerRollbackError
from dp.ledger_format import LedgerEntry, read_ledger
from dp.ledger_heads import LedgerHead, check_not_behind

__all__ = [
    "INDEPENDENT_TOLERANCE",
    "SAME_ACCOUNTANT_RTOL",
    "ClientAudit",
    "Verdict",
    "audit_ledger",
    "audit_ledgers",
]

SAME_ACCOUNTANT_RTOL = 1e-6
INDEPENDENT_TOLERANCE = 1e-9


class Verdict(enum.Enum):
    """Outcome for one ledger, worst first."""

    CORRUPTED = "CORRUPTED"
    EMPTY = "EMPTY"
    ROLLED_BACK = "ROLLED-BACK"
    UNDER_REPORTED = "UNDER-REPORTED"
    OVER_BUDGET = "OVER-BUDGET"
    ERROR = "ACCOUNTING-ERROR"
    OK = "OK"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientAudit:
    """Audit result for one ledger file.

    ``recomputed`` maps the index of each round's last entry to ε recomputed
    there with the ledger's own accountant; ``epsilon_lower`` is the
    independent lower bound at the head.  ``notes`` are remarks that do not
    fail the audit.
    """

    path: Path
    verdict: Verdict
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    entries: tuple[LedgerEntry, ...]
    recomputed: Mapping[int, float]
    epsilon_lower: float | None

    @property
    def client_id(self) -> str:
        """The ledger's client id ("?" when unreadable or empty)."""
        return self.entries[0].client_id if self.entries else "?"

    @property
    def epsilon_recomputed(self) -> float | None:
        """ε recomputed at the head with the ledger's own accountant."""
        return self.recomputed.get(len(self.entries) - 1)


def _round_ends(entries: Sequence[LedgerEntry]) -> list[int]:
    """Index of the last entry of every round (the head included)."""
    return [
        i
        for i, e in enumerate(entries)
        if i == len(entries) - 1 or entries[i + 1].round != e.round
    ]


def _recompute(entries: Sequence[LedgerEntry]) -> tuple[dict[int, float], float]:
    first = entries[0]
    history = [e.step_run for e in entries]
    # A PRV evaluation takes 0.1-1 s: PRV ledgers are recomputed at the head.
    points = (
        [len(entries) - 1]
        if first.accountant is Accountant.PRV
        else _round_ends(entries)
    )
    recomputed = {
        i: epsilon_for_history(
            history[: i + 1],
            first.delta,
            first.accountant,
            neighbouring=first.neighbouring,
        )
        for i in points
    }
    lower = epsilon_lower_bound(history, first.delta, neighbouring=first.neighbouring)
    return recomputed, lower


def _under_reports(
    entries: Sequence[LedgerEntry], recomputed: Mapping[int, float], lower: float
) -> list[str]:
    problems = []
    for i, eps in recomputed.items():
        e = entries[i]
        if e.epsilon < eps * (1 - SAME_ACCOUNTANT_RTOL) - 1e-9:
            problems.append(
                f"line {i + 1} (round {e.round}): recorded ε={e.epsilon:.6g} is "
                f"below the recomputed {e.accountant.name} ε={eps:.6g}"
            )
    head = entries[-1]
    if head.epsilon < lower - INDEPENDENT_TOLERANCE:
        problems.append(
            f"line {len(entries)} (round {head.round}): recorded ε={head.epsilon:.6g}"
            f" is below the independent PLD lower bound ε={lower:.6g} under "
            f"{head.neighbouring.name}"
        )
    return problems


def _over_budget(
    entries: Sequence[LedgerEntry], recomputed: Mapping[int, float]
) -> list[str]:
    problems = []
    for i, e in enumerate(entries):
        # Each charge must fit the budget in force when it was made.
        spent = max(e.epsilon, recomputed.get(i, 0.0))
        if spent > e.epsilon_budget:
            problems.append(
                f"line {i + 1} (round {e.round}): ε={spent:.6g} exceeds the "
                f"budget ε={e.epsilon_budget:.6g}"
            )
    return problems


def _rollbacks(
    path: Path, entries: Sequence[LedgerEntry], heads: Sequence[LedgerHead]
) -> list[str]:
    problems = []
    for head in heads:
        try:
            check_not_behind(entries, head, client_id=entries[0].client_id, path=path)
        except LedgerRollbackError as exc:
            problems.append(str(exc))
    return problems


def _failed(path: Path, verdict: Verdict, problem: str) -> ClientAudit:
    return ClientAudit(
        path=path,
        verdict=verdict,
        problems=(problem,),
        notes=(),
        entries=(),
        recomputed={},
        epsilon_lower=None,
    )


def audit_ledger(
    path: Path, recorded_heads: Mapping[str, Sequence[LedgerHead]] | None = None
) -> ClientAudit:
    """Verify and recompute one ledger (see the module text); never raises.

    ``recorded_heads`` are the heads a coordinator recorded, by client id; the
    ledger is checked against those of its own client.
    """
    try:
        entries = read_ledger(path)
    except (LedgerError, OSError) as exc:
        return _failed(path, Verdict.CORRUPTED, str(exc))
    if not entries:
        return _failed(
            path,
            Verdict.EMPTY,
            f"ledger {path} is empty: it records no charge (a client that never "
            "trained has no ledger file; an empty one was truncated)",
        )
    notes: tuple[str, ...] = ()
    if entries[0].version == 1:
        notes = (
            "ledger format v1 records no neighbouring relation: read as "
            "add/remove-one (ADD_REMOVE)",
        )
    heads = (recorded_heads or {}).get(entries[0].client_id, ())
    checks = [(Verdict.ROLLED_BACK, _rollbacks(path, entries, heads))]
    recomputed: dict[int, float] = {}
    lower: float | None = None
    try:
        recomputed, head_lower = _recompute(entries)
    except AccountingError as exc:
        checks.append((Verdict.ERROR, [str(exc)]))
    else:
        lower = head_lower
        checks += [
            (Verdict.UNDER_REPORTED, _under_reports(entries, recomputed, head_lower)),
            (Verdict.OVER_BUDGET, _over_budget(entries, recomputed)),
        ]
    failing = [v for v, found in checks if found]
    return ClientAudit(
        path=path,
        verdict=failing[0] if failing else Verdict.OK,
        problems=tuple(p for _, found in checks for p in found),
        notes=notes,
        entries=entries,
        recomputed=recomputed,
        epsilon_lower=lower,
    )


def audit_ledgers(
    paths: Sequence[Path],
    recorded_heads: Mapping[str, Sequence[LedgerHead]] | None = None,
) -> tuple[list[ClientAudit], list[str]]:
    """Audit every ledger; with recorded heads, also list clients left unaudited.

    Returns the audits (in ``paths`` order) and the problems that belong to no
    single ledger: a client with a recorded head but no verified ledger among
    ``paths`` (its ledger is missing, empty or unreadable).
    """
    heads = recorded_heads or {}
    audits = [audit_ledger(path, heads) for path in paths]
    seen = {a.client_id for a in audits if a.entries}
    orphans = [
        f"client {client!r} has a recorded ledger head ({recorded[-1]}) but no "
        "verified ledger among those audited"
        for client, recorded in heads.items()
        if client not in seen and any(h.seq >= 0 for h in recorded)
    ]
    return audits, orphans
