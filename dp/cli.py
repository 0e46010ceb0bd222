"""``fedshield audit``: verify privacy ledgers and (optionally) run a canary audit.

The core CLI dispatches ``fedshield audit ...`` to :func:`audit_main`; it also
runs as ``python -m dp.cli audit ...``.

Exit status: 0 when every ledger verifies, matches the recomputed ε and is
within budget (and the canary audit, if run, does not refute the accounting);
1 when anything fails; 2 for usage errors (argparse) or a missing matplotlib.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dp.empirical import CanaryAuditConfig, empirical_audit
from dp.errors import MissingDependencyError
from dp.ledger_audit import Verdict, audit_ledger, format_table, plot_epsilon

__all__ = ["audit_main", "main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedshield audit",
        description=(
            "Verify hash-chained privacy ledgers, recompute each client's ε with "
            "Opacus RDP and PRV (and dp-accounting PLD if installed), flag "
            "under-reported entries and budget overruns, and plot ε by round."
        ),
    )
    p.add_argument("ledgers", nargs="*", type=Path, metavar="LEDGER")
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


def _ledger_audit(paths: list[Path], plot: Path | None) -> int:
    audits = [audit_ledger(p) for p in paths]
    print(format_table(audits))
    failed = False
    for a in audits:
        for problem in a.problems:
            print(f"{a.path}: {problem}")
        failed = failed or a.verdict is not Verdict.OK
    if plot is not None:
        try:
            plot_epsilon(audits, plot)
        except MissingDependencyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {plot}")
    return 1 if failed else 0


def _canary_audit(m: int, non_private: bool) -> int:
    if m < 20:
        print("error: --canaries needs M >= 20", file=sys.stderr)
        return 2
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
    args = _parser().parse_args(argv)
    if not args.ledgers and args.canaries is None:
        _parser().error("give at least one LEDGER, or --canaries M")
    status = 0
    if args.ledgers:
        plot = None if args.no_plot else args.plot
        status = max(status, _ledger_audit(args.ledgers, plot))
    if args.canaries is not None:
        status = max(status, _canary_audit(args.canaries, args.non_private))
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
