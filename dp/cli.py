"""``fedshield audit``: verify privacy ledgers and (optionally) run a canary audit.

The core CLI dispatches ``fedshield audit ...`` to :func:`audit_main`; it also
runs as ``python -m dp.cli audit ...``.  A LEDGER argument may be a ledger file
or a folder (every ``*.jsonl`` file in it is audited).

``--heads FILE`` checks each ledger against the heads a coordinator recorded
(format in ``dp/LEDGER_FORMAT.md``; the coordinator's ``metrics.jsonl`` can
be passed as it is): a ledger behind a recorded head, or a recorded client
without a verified ledger, fails the audit.

Exit status: 0 when every ledger verifies, matches the recomputed ε, is within
budget and is not behind a recorded head (and the canary audit, if run, does
not refute the accounting); 1 when anything fails; 2 for usage errors, a
missing or malformed input file, or a missing matplotlib, with one line on
stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dp.errors import InvalidLedgerHeadError, MissingDependencyError
from dp.ledger_audit import Verdict, audit_ledgers
from dp.ledger_heads import LedgerHead, read_recorded_heads
from dp.ledger_report import format_table, plot_epsilon

__all__ = ["audit_main", "main"]


class _UsageError(Exception):
    """Bad input: reported as one line on stderr with exit status 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedshield audit",
        description=(
            "Verify hash-chained privacy ledgers, recompute each client's ε under "
            "the neighbouring relation its ledger records (with its own "
            "accountant, and independently with a dp-accounting PLD lower "
            "bound), flag under-reported entries, budget overruns and ledgers "
            "behind their recorded heads, and plot ε by round."
        ),
    )
    p.add_argument(
        "ledgers",
        nargs="*",
        type=Path,
        metavar="LEDGER",
        help="a ledger file, or a folder of *.jsonl ledgers",
    )
    p.add_argument(
        "--heads",
        type=Path,
        metavar="FILE",
        help="JSON / JSON Lines of recorded ledger heads (e.g. metrics.jsonl)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=Path("fedshield-audit-epsilon.png"),
        help="PNG of ε against round (default: %(default)s)",
    )
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument(
        "--canaries",
        type=int,
        metavar="M",
        default=None,
        help="also run a one-run canary audit of the DP-SGD pipeline with M canaries",
    )
    p.add_argument(
        "--non-private",
        action="store_true",
        help="with --canaries, also run the non-private control (shows audit power)",
    )
    return p


def _ledger_files(args: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in args:
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise _UsageError(f"no ledgers (*.jsonl) in folder {path}")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise _UsageError(f"ledger {path} not found")
    return files


def _heads(path: Path | None) -> dict[str, tuple[LedgerHead, ...]]:
    if path is None:
        return {}
    if not path.is_file():
        raise _UsageError(f"heads file {path} not found")
    try:
        return read_recorded_heads(path)
    except (InvalidLedgerHeadError, OSError) as exc:
        raise _UsageError(f"heads file {path}: {exc}") from None


def _ledger_audit(files: list[Path], heads_file: Path | None, plot: Path | None) -> int:
    audits, orphans = audit_ledgers(files, _heads(heads_file))
    print(format_table(audits))
    failed = bool(orphans)
    for a in audits:
        for note in a.notes:
            print(f"{a.path}: note: {note}")
        for problem in a.problems:
            print(f"{a.path}: {problem}")
        failed = failed or a.verdict is not Verdict.OK
    for orphan in orphans:
        print(f"{heads_file}: {orphan}")
    if plot is not None:
        try:
            plot_epsilon(audits, plot)
        except MissingDependencyError as exc:
            raise _UsageError(str(exc)) from None
        print(f"wrote {plot}")
    return 1 if failed else 0


def _canary_audit(m: int, non_private: bool) -> int:
    # Imported here: the canary audit trains (torch, Opacus); a ledger audit
    # needs neither.
    from dp.empirical import CanaryAuditConfig, empirical_audit

    if m < 20:
        raise _UsageError("--canaries needs M >= 20")
    cfg = CanaryAuditConfig(num_canaries=m)
    status = 0
    runs = [True, False] if non_private else [True]
    for private in runs:
        res = empirical_audit(cfg, private=private)
        b = res.bound
        label = "DP-SGD" if private else "non-private control"
        accounted = (
            f"{res.epsilon_accounted:.4f}" if res.epsilon_accounted is not None else "-"
        )
        print(
            f"canary audit ({label}): m={b.m} included={res.num_included} "
            f"guesses r={b.r} correct v={b.v} δ={b.delta:g} "
            f"confidence={1 - b.significance:.0%}: "
            f"ε_lower={b.epsilon_lower_bound:.4f} ε_accounted={accounted}"
        )
        if not res.consistent:
            print("FAIL: the empirical lower bound exceeds the accounted ε")
            status = 1
    return status


def audit_main(argv: list[str] | None = None) -> int:
    """Run ``fedshield audit`` with ``argv`` (without the program name)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.ledgers and args.canaries is None:
        parser.error("give at least one LEDGER, or --canaries M")
    status = 0
    try:
        if args.ledgers:
            plot = None if args.no_plot else args.plot
            files = _ledger_files(args.ledgers)
            status = max(status, _ledger_audit(files, args.heads, plot))
        if args.canaries is not None:
            status = max(status, _canary_audit(args.canaries, args.non_private))
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return status


def main(argv: list[str] | None = None) -> int:
    """``python -m dp.cli audit ...`` entry point."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "audit":
        print("usage: python -m dp.cli audit LEDGER... [options]", file=sys.stderr)
        return 2
    return audit_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
