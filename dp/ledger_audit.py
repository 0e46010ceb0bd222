"""Accounting audit of privacy ledgers: verify, recompute ε independently, report.

For each ledger the audit (1) verifies the hash chain, (2) recomputes, for
every entry, the ε of all runs up to that entry with Opacus RDP and Opacus
PRV (and Google ``dp-accounting`` PLD when it is installed), and (3) flags
an entry whose recorded ε is below a recomputation by more than its tolerance:

* **same accountant** as the entry: recorded ≥ recomputed·(1 − 1e-6) − 1e-9.
  The recomputation is the same deterministic float computation, so only
  last-bit differences are legitimate; any real under-report is far larger.
* **PRV, whatever the entry's accountant**: recorded ≥ PRV − 0.025.  PRV
  returns an upper bound at most ``2 × eps_error = 0.02`` above the true ε, and
  every honest accountant reports at least the true ε; 0.005 covers δ_error.
* **PLD** (optional): recorded ≥ PLD − 0.01, PLD's discretisation slack.

Every entry's ε (recorded, and recomputed with its own accountant) must also
be within the budget recorded in that entry.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dp.accounting import PRV_EPS_ERROR, StepRun, epsilon_for_history, merge_runs
from dp.config import Accountant
from dp.errors import AccountingError, LedgerError, MissingDependencyError
from dp.ledger_format import LedgerEntry, read_ledger

__all__ = [
    "ClientAudit",
    "Verdict",
    "audit_ledger",
    "format_table",
    "pld_epsilon",
    "plot_epsilon",
]

SAME_ACCOUNTANT_RTOL = 1e-6
PRV_CROSS_TOLERANCE = 2 * PRV_EPS_ERROR + 0.005
PLD_TOLERANCE = 0.01


class Verdict(enum.Enum):
    """Outcome for one ledger, worst first."""

    CORRUPTED = "CORRUPTED"
    UNDER_REPORTED = "UNDER-REPORTED"
    OVER_BUDGET = "OVER-BUDGET"
    ERROR = "ACCOUNTING-ERROR"
    OK = "OK"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientAudit:
    """Audit result for one ledger file."""

    path: Path
    verdict: Verdict
    problems: tuple[str, ...]
    entries: tuple[LedgerEntry, ...]
    epsilon_rdp: tuple[float, ...]
    epsilon_prv: tuple[float, ...]
    epsilon_pld: tuple[float, ...] | None

    @property
    def client_id(self) -> str:
        """The ledger's client id ("?" when unreadable)."""
        return self.entries[0].client_id if self.entries else "?"


def pld_epsilon(history: Sequence[StepRun], delta: float) -> float | None:
    """ε by dp-accounting's PLD accountant, or None when it is not installed."""
    try:
        dpa: Any = importlib.import_module("dp_accounting")
    except ImportError:
        return None
    acct = dpa.pld.PLDAccountant()
    for run in merge_runs(history):
        event = dpa.PoissonSampledDpEvent(
            run.sample_rate, dpa.GaussianDpEvent(run.noise_multiplier)
        )
        acct.compose(event, run.steps)
    return float(acct.get_epsilon(delta))


def _recompute(
    entries: Sequence[LedgerEntry],
) -> tuple[list[float], list[float], list[float] | None]:
    delta = entries[0].delta
    rdp: list[float] = []
    prv: list[float] = []
    pld: list[float] | None = []
    cache: dict[tuple[StepRun, ...], tuple[float, float, float | None]] = {}
    for k in range(1, len(entries) + 1):
        key = tuple(merge_runs(e.step_run for e in entries[:k]))
        if key not in cache:
            cache[key] = (
                epsilon_for_history(key, delta, Accountant.RDP),
                epsilon_for_history(key, delta, Accountant.PRV),
                pld_epsilon(key, delta),
            )
        e_rdp, e_prv, e_pld = cache[key]
        rdp.append(e_rdp)
        prv.append(e_prv)
        if pld is not None and e_pld is not None:
            pld.append(e_pld)
        else:
            pld = None
    return rdp, prv, pld


def _entry_problems(
    line: int, e: LedgerEntry, rdp: float, prv: float, pld: float | None
) -> list[str]:
    own = rdp if e.accountant is Accountant.RDP else prv
    problems = []
    if e.epsilon < own * (1 - SAME_ACCOUNTANT_RTOL) - 1e-9:
        problems.append(
            f"line {line} (round {e.round}): recorded ε={e.epsilon:.6g} is below "
            f"the recomputed {e.accountant.name} ε={own:.6g}"
        )
    if e.epsilon < prv - PRV_CROSS_TOLERANCE:
        problems.append(
            f"line {line} (round {e.round}): recorded ε={e.epsilon:.6g} is below "
            f"the independent PRV ε={prv:.6g} by more than {PRV_CROSS_TOLERANCE}"
        )
    if pld is not None and e.epsilon < pld - PLD_TOLERANCE:
        problems.append(
            f"line {line} (round {e.round}): recorded ε={e.epsilon:.6g} is below "
            f"the PLD ε={pld:.6g} by more than {PLD_TOLERANCE}"
        )
    return problems


def audit_ledger(path: Path) -> ClientAudit:
    """Verify and recompute one ledger; never raises for a bad ledger."""
    try:
        entries = read_ledger(path)
    except (LedgerError, OSError) as exc:
        return ClientAudit(
            path=path,
            verdict=Verdict.CORRUPTED,
            problems=(str(exc),),
            entries=(),
            epsilon_rdp=(),
            epsilon_prv=(),
            epsilon_pld=None,
        )
    if not entries:
        return ClientAudit(
            path=path,
            verdict=Verdict.OK,
            problems=(),
            entries=(),
            epsilon_rdp=(),
            epsilon_prv=(),
            epsilon_pld=None,
        )
    try:
        rdp, prv, pld = _recompute(entries)
    except AccountingError as exc:
        return ClientAudit(
            path=path,
            verdict=Verdict.ERROR,
            problems=(str(exc),),
            entries=entries,
            epsilon_rdp=(),
            epsilon_prv=(),
            epsilon_pld=None,
        )
    problems: list[str] = []
    for i, e in enumerate(entries):
        problems += _entry_problems(
            i + 1, e, rdp[i], prv[i], pld[i] if pld is not None else None
        )
    verdict = Verdict.UNDER_REPORTED if problems else Verdict.OK
    over = []
    for i, e in enumerate(entries):
        # Each charge must fit the budget in force when it was made.
        spent = max(rdp[i] if e.accountant is Accountant.RDP else prv[i], e.epsilon)
        if spent > e.epsilon_budget:
            over.append(
                f"line {i + 1} (round {e.round}): ε={spent:.6g} exceeds the "
                f"budget ε={e.epsilon_budget:.6g}"
            )
    if over:
        problems += over
        if verdict is Verdict.OK:
            verdict = Verdict.OVER_BUDGET
    return ClientAudit(
        path=path,
        verdict=verdict,
        problems=tuple(problems),
        entries=entries,
        epsilon_rdp=tuple(rdp),
        epsilon_prv=tuple(prv),
        epsilon_pld=tuple(pld) if pld is not None else None,
    )


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def format_table(audits: Sequence[ClientAudit]) -> str:
    """The per-client table printed by ``fedshield audit``."""
    with_pld = any(a.epsilon_pld is not None for a in audits)
    head = ["client", "rounds", "steps", "σ", "q", "δ", "ε recorded"]
    head += ["ε RDP", "ε PRV"] + (["ε PLD"] if with_pld else [])
    head += ["budget", "verdict"]
    rows = [head]
    for a in audits:
        e = a.entries
        last = e[-1] if e else None
        sigmas = sorted({x.noise_multiplier for x in e})
        rates = sorted({x.sample_rate for x in e})
        row = [
            a.client_id,
            str(len({x.round for x in e})),
            str(sum(x.steps for x in e)),
            "/".join(f"{s:.4g}" for s in sigmas) or "-",
            "/".join(f"{q:.4g}" for q in rates) or "-",
            _fmt(last.delta if last else None, ".3g"),
            _fmt(last.epsilon if last else None),
            _fmt(a.epsilon_rdp[-1] if a.epsilon_rdp else None),
            _fmt(a.epsilon_prv[-1] if a.epsilon_prv else None),
        ]
        if with_pld:
            row.append(_fmt(a.epsilon_pld[-1] if a.epsilon_pld else None))
        row += [_fmt(last.epsilon_budget if last else None), a.verdict.value]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    )


def plot_epsilon(audits: Sequence[ClientAudit], out: Path) -> None:
    """Write a PNG of recorded ε against round, one line per client.

    Raises :class:`MissingDependencyError` with an install hint when
    matplotlib is missing.
    """
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")  # files only; never open a window
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError as exc:
        raise MissingDependencyError(
            "the ε plot needs matplotlib: pip install 'fedshield[test]' "
            "(or matplotlib), or run the audit with --no-plot"
        ) from exc
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plotted = False
    for a in audits:
        if not a.entries:
            continue
        rounds = [e.round for e in a.entries]
        line = ax.plot(
            rounds, [e.epsilon for e in a.entries], marker="o", label=a.client_id
        )
        ax.axhline(
            a.entries[-1].epsilon_budget,
            color=line[0].get_color(),
            linestyle="--",
            linewidth=0.8,
        )
        plotted = True
    ax.xaxis.set_major_locator(
        importlib.import_module("matplotlib.ticker").MaxNLocator(integer=True)
    )
    ax.set_xlabel("round")
    ax.set_ylabel("ε spent (at each ledger's δ)")
    ax.set_title("Privacy spent per client (dashed: budget)")
    if plotted:  # no verified ledger: an empty, labelled plot, no legend
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
