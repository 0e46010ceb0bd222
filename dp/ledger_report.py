"""What ``fedshield audit`` prints and draws: the per-client table and ε plot."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dp.accounting import Mechanism
from dp.errors import MissingDependencyError
from dp.ledger_audit import ClientAudit

__all__ = ["format_table", "plot_epsilon"]

_RELATION = {"replace_one": "replace-one", "add_remove": "add/remove"}


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _row(a: ClientAudit) -> list[str]:
    e = a.entries
    last = e[-1] if e else None
    sgd = [x for x in e if x.mechanism is Mechanism.POISSON_SUBSAMPLED_GAUSSIAN]
    sigmas = sorted({x.noise_multiplier for x in sgd})
    rates = sorted({x.sample_rate for x in sgd})
    return [
        a.client_id,
        _RELATION[last.neighbouring.value] if last else "-",
        last.accountant.name if last else "-",
        str(len({x.round for x in e})),
        str(sum(x.steps for x in sgd)),
        str(len(e) - len(sgd)),
        "/".join(f"{s:.4g}" for s in sigmas) or "-",
        "/".join(f"{q:.4g}" for q in rates) or "-",
        _fmt(last.delta if last else None, ".3g"),
        _fmt(last.epsilon if last else None),
        _fmt(a.epsilon_recomputed),
        _fmt(a.epsilon_lower),
        _fmt(last.epsilon_budget if last else None),
        a.verdict.value,
    ]


def format_table(audits: Sequence[ClientAudit]) -> str:
    """The per-client table printed by ``fedshield audit``.

    ``ε recomputed`` uses the ledger's own accountant; ``ε lower (PLD)`` is the
    independent lower bound no honest record is below.
    """
    head = [
        "client",
        "relation",
        "accountant",
        "rounds",
        "steps",
        "releases",
        "σ",
        "q",
        "δ",
        "ε recorded",
        "ε recomputed",
        "ε lower (PLD)",
        "budget",
        "verdict",
    ]
    rows = [head, *(_row(a) for a in audits)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    )


def plot_epsilon(audits: Sequence[ClientAudit], out: Path) -> None:
    """Write a PNG of recorded ε at the end of each round, one line per client.

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
        # A round's last entry holds ε after everything that round charged.
        by_round = {e.round: e.epsilon for e in a.entries}
        line = ax.plot(
            list(by_round), list(by_round.values()), marker="o", label=a.client_id
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
    ax.set_ylabel("ε spent (at each ledger's δ and relation)")
    ax.set_title("Privacy spent per client (dashed: budget)")
    if plotted:  # no verified ledger: an empty, labelled plot, no legend
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
