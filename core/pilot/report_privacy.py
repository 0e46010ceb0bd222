"""The privacy sections of ``report.md``, written for a data-protection officer.

What ε and δ mean and what one protected record is; each institution's ε
and ledger head; the threat assumptions in words; what the coordinator saw
each round (sums only, and a warning when the secure-aggregation clip cut
more than 1 % of the coordinates); provenance; the limitations.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

import dp
from core.pilot.report import PilotReport, fmt
from core.reporting import CLIP_WARNING_FRACTION

__all__ = ["privacy_sections"]

# What one protected record is, by the neighbouring relation ε is stated for.
_RECORD = {
    "replace_one": (
        "One record is one row of an institution's training data: one patient's "
        "or one customer's record. The guarantee compares any two versions of "
        "an institution's data that differ in one record replaced by another "
        "(replace-one neighbours), so row counts are not what it hides: they "
        "are treated as public."
    ),
    "add_remove": (
        "One record is one row of an institution's training data: one patient's "
        "or one customer's record. The guarantee compares any two versions of "
        "an institution's data that differ by one record added or removed "
        "(add/remove-one neighbours)."
    ),
}


def _relation(privacy: dp.DPConfig) -> str:
    """The neighbouring relation the ledgers state ε under."""
    return privacy.neighbouring.value


def _released(privacy: dp.DPConfig) -> str:
    """What leaves an institution, in words."""
    what = ("Nothing else leaves an institution: its clipped, noised model "
            "update and its row count (the weight of its update) travel inside "
            "the secure sum")  # fmt: skip
    if privacy.release_loss:
        return (f"{what}, with its mean training loss, clipped to "
                f"[0, {privacy.loss_bound:g}] and noised (σ = "
                f"{privacy.loss_noise_multiplier:g}), charged to the same "
                "ledger.")  # fmt: skip
    return f"{what}; no training metric is released."


def privacy_sections(report: PilotReport, plots: Mapping[str, Path]) -> list[str]:
    """The privacy, provenance and limitations sections, in reading order."""
    return [
        *_privacy_section(report, plots), "",
        *_threat_section(report), "",
        *_coordinator_section(report), "",
        *_provenance_section(report), "",
        *_limitations_section(report),
    ]  # fmt: skip


def _privacy_section(report: PilotReport, plots: Mapping[str, Path]) -> list[str]:
    p = report.plan.privacy
    if p is None:
        return ["## Privacy", "",
                "**DP is disabled**: the model and every update carry no "
                "privacy guarantee."]  # fmt: skip
    how = (f"σ calibrated per institution so that the {p.planned_rounds} "
           f"rounds it is expected to train in reach ε={p.target_epsilon:g} "
           "(sampled more often, it spends more, up to the budget)"
           if p.target_epsilon is not None
           else f"noise multiplier σ={p.noise_multiplier:g}")  # fmt: skip
    lines = [
        "## Privacy", "",
        f"Every institution trains with DP-SGD and spends at most ε = "
        f"{p.epsilon_budget:g} with δ = {p.delta:g} for its own records. "
        "Whatever the coordinator, the other institutions or anyone holding the "
        "final model do with what they receive, any conclusion they draw about "
        "one record becomes at most e^ε times more (or less) likely than if the "
        "record had been different, except with probability δ. Smaller is "
        "stronger: ε = 1 allows a factor of 2.7, ε = 8 a factor of about 3,000; "
        "δ is a failure probability kept far below one in the number of "
        f"records. {_RECORD[_relation(p)]} {_released(p)}", "",
        f"Settings: per-example gradient clip norm {p.max_grad_norm:g}, {how}, "
        "Poisson sampling of batches, noise from a ChaCha20 CSPRNG. An "
        "institution whose next round would exceed its budget declines. ε "
        "accumulates over every run of this pilot: the ledgers continue.", "",
        "| institution | ε spent (all runs) / budget | rounds trained this run "
        "| ledger | ledger head (seq, entry hash) |", "|---|---|---|---|---|",
    ]  # fmt: skip
    heads = {h.institution: h for h in report.provenance.heads}
    for i in report.institutions:
        h = heads.get(i.name)
        head = "–" if h is None else f"{h.seq}, `{h.entry_hash[:16]}…`"
        lines.append(
            f"| {i.name} | {fmt(i.epsilon_spent, '.3f')} / "
            f"{fmt(i.epsilon_budget, 'g')} | {i.rounds_trained} | "
            f"{'`' + i.ledger + '`' if i.ledger else '–'} | {head} |"
        )
    return [*lines, "", f"![epsilon by round]({plots['epsilon'].name})"]


def _threat_section(report: PilotReport) -> list[str]:
    sa = report.plan.secure_aggregation
    dp_line = (
        "The DP guarantee needs no trust in the coordinator or in secure "
        "aggregation: each institution adds its own noise before anything "
        "leaves it, so ε holds against the coordinator, every other "
        "institution and anyone holding the final model, even if all of them "
        "collude. Each institution is trusted to run the shipped code on its "
        "own data and to keep its own ledger."
        if report.plan.privacy is not None
        else "Without DP, nothing bounds what the model and the updates reveal."
    )
    if sa is None:
        agg = ("Secure aggregation is off: the coordinator sees every "
               "institution's update and row count in the clear.")  # fmt: skip
    else:
        mode = (
            "semi-honest: it follows the protocol but may try to learn from "
            "everything it receives"
            if sa.mode.value == "semi-honest"
            else "possibly malicious: it may deviate from the protocol (lie about "
            "who dropped out, show institutions different views); signed "
            "identities and a consistency round make the institutions abort "
            "rather than reveal more than the sum"
        )
        corrupt = (
            "no institution is assumed to collude with it"
            if sa.corrupt_fraction == 0
            else f"up to {sa.corrupt_fraction:g} of each round's institutions "
            "may collude with it"
        )
        agg = (f"Secure aggregation: the coordinator is assumed {mode}; "
               f"{corrupt}. Under these assumptions it learns only the weighted "
               "sum of the round's updates and the sum of the weights, never one "
               "institution's update or row count.")  # fmt: skip
    return ["## Threat assumptions", "", dp_line, "", agg]


def _coordinator_section(report: PilotReport) -> list[str]:
    sa = report.plan.secure_aggregation
    if sa is not None:
        rate = report.config.secure_aggregation.simulation.dropout_rate
        derived = (" (derived from the DP settings: the largest per-coordinate "
                   "update bound)"
                   if report.config.secure_aggregation.clip_from_privacy
                   and report.plan.privacy is not None else "")  # fmt: skip
        lines = [f"Secure aggregation ({sa.mode.value}, pairwise masks, "
                 f"{sa.ring_bits}-bit ring, update coordinates clipped to "
                 f"±{sa.clip:.4g}{derived}, weights up to {sa.max_weight}, "
                 f"surviving {sa.dropout_tolerance:g} of the cohort dropping out, "
                 f"simulated dropout rate {rate:g}). The coordinator saw only "
                 f"these sums{_loss_sum(report)}:", ""]  # fmt: skip
    else:
        lines = ["**Secure aggregation is disabled**: the coordinator saw every "
                 "institution's update. Sums per round:", ""]  # fmt: skip
    lines = ["## What the coordinator saw", "", *lines,
             "| round | cohort | survived | dropped | Σ weights | ‖Σ weighted "
             "update‖ | clipped | note |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {c.round_index} | {c.cohort} | {c.survivors} | {c.dropped} | "
              f"{c.total_weight:.0f} | {c.update_sum_norm:.4g} | "
              f"{_percent(c.clipped_fraction)} | "
              f"{'aborted: ' + c.aborted if c.aborted else ''} |"
              for c in report.coordinator]  # fmt: skip
    return lines + _clip_warning(report) + _bytes_line(report)


def _loss_sum(report: PilotReport) -> str:
    p = report.plan.privacy
    if p is None or not p.release_loss:
        return ""
    return " (and the weighted mean of the DP-released training losses)"


def _percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{100 * fraction:.2f} %"


def _clip_warning(report: PilotReport) -> list[str]:
    bad = [c for c in report.coordinator
           if (c.clipped_fraction or 0.0) > CLIP_WARNING_FRACTION]  # fmt: skip
    if not bad:
        return []
    worst = max(c.clipped_fraction or 0.0 for c in bad)
    rounds = ", ".join(str(c.round_index) for c in bad)
    return ["", f"**Warning: the secure-aggregation clip distorted the model.** "
            f"In rounds {rounds} more than {100 * CLIP_WARNING_FRACTION:g} % of "
            f"the update coordinates were clipped (at most {100 * worst:.1f} %), "
            "so the secure mean differs from the true mean. Raise "
            "`secure_aggregation.clip`, or leave it unset to derive it from the "
            "DP settings."]  # fmt: skip


def _bytes_line(report: PilotReport) -> list[str]:
    sent = [i.mean_bytes_sent for i in report.institutions if i.mean_bytes_sent]
    if not sent:
        return []
    return ["", f"Each institution sent {np.mean(sent):,.0f} bytes per round on "
            f"average, against {report.plaintext_bytes:,} bytes for its update "
            f"as plain float32 ({report.num_params} parameters)."]  # fmt: skip


def _provenance_section(report: PilotReport) -> list[str]:
    prov = report.provenance
    commit = prov.commit or "not a git checkout"
    lines = ["## Provenance", "",
             f"- fedshield {prov.version}, commit `{commit}`",
             f"- data source SHA-256 `{prov.data_sha256}` ({prov.data_source})",
             f"- final model (`model.pt`) SHA-256 `{prov.model_sha256}`"]  # fmt: skip
    if report.plan.privacy is not None:
        verdict = {True: "**passed**", False: "**FAILED**", None: "not run"}[
            prov.audit_ok
        ]
        lines += [f"- ledger audit at the end of the run: {verdict} "
                  f"(hash chains, ε recomputed, budgets, ledger heads; rerun it "
                  f"with `fedshield audit {report.ledger_dir}/*.jsonl"
                  + (f" --heads {prov.heads_file}`)" if prov.heads_file else "`)"),
                  *(f"  - {problem}" for problem in prov.audit_problems)]  # fmt: skip
        lines += ["- ledger heads recorded by the coordinator: the latest in "
                  "the table under Privacy, every round's below and in "
                  "`metrics.jsonl`", *_heads_by_round(report)]  # fmt: skip
    return lines


def _heads_by_round(report: PilotReport) -> list[str]:
    if not report.heads_by_round:
        return []
    lines = ["", "<details><summary>Ledger heads recorded each round (client: "
             "seq, entry hash)</summary>", ""]  # fmt: skip
    for r, heads in report.heads_by_round:
        cells = ", ".join(f"{c}: {seq} `{h[:12]}…`" for c, seq, h in heads)
        lines.append(f"- round {r}: {cells or 'none (no institution trained)'}")
    return [*lines, "", "</details>"]


def _limitations_section(report: PilotReport) -> list[str]:
    lines = ["## Limitations", "",
             "- This is a simulation: every institution runs in one process, and "
             "secure aggregation runs in memory; network failures and timing "
             "are not exercised beyond simulated dropouts.",
             "- ε bounds what can be learnt about one record. A person with k "
             "records at an institution is protected only at k·ε, with a larger "
             "δ (group privacy).",
             "- ε is an upper bound from the accountant; it assumes the shipped "
             "code runs unmodified at each institution. An empirical audit can "
             "only give lower bounds.",
             "- Each institution standardises its features on its own rows. "
             "This keeps every statistic local but can cost accuracy when sites "
             "differ. The feature schema (columns, categories of text columns) "
             "is read from the whole table, standing in for an agreed data "
             "dictionary.",
             "- The centralised baseline and the section on the simulation's "
             "own view pool all institutions' rows; they exist only in this "
             "simulation."]  # fmt: skip
    if report.plan.privacy is not None and _relation(report.plan.privacy) == (
        "replace_one"
    ):
        lines.append("- Row counts are treated as public: the sample rate in "
                     "the ledger, the secure-aggregation weight and the "
                     "accounting reveal them.")  # fmt: skip
    return lines
