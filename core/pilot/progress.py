"""What ``fedshield run`` shows while and after a pilot runs.

`PilotProgress` is the console reporter of a pilot run: a progress bar over
rounds (tqdm, on a terminal) with the latest test accuracy and ε, a line per
round, or, in JSON mode, one JSON line per event on stdout. `summary_lines`
is the text printed at the end.
"""

from __future__ import annotations

import json
import sys
from statistics import mean
from typing import Any, TextIO

from core.pilot.report import PilotReport, TestScores, describe_mode, fmt
from core.reporting import ConsoleReporter, RoundRecord

__all__ = ["PilotProgress", "summary_lines"]


class PilotProgress(ConsoleReporter):
    """`ConsoleReporter` with accuracy and ε in the bar's postfix, and a JSON
    mode that writes every event as one JSON line on `stream`."""

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        quiet: bool = False,
        as_json: bool = False,
    ) -> None:
        super().__init__(stream=stream, quiet=quiet or as_json)
        self._json = as_json
        self._out = stream if stream is not None else sys.stdout

    def start(self, *, first_round: int, total_rounds: int) -> None:
        """Open the bar (on stderr, when it is a terminal and not quiet)."""
        if self._json:
            return
        super().start(first_round=first_round, total_rounds=total_rounds)
        if self._bar is not None:
            self._bar.set_description("fedshield rounds")

    def round(self, record: RoundRecord) -> None:
        """Report a round; the bar shows the latest accuracy and mean ε."""
        if self._json:
            self._emit(record.to_json())
            return
        if self._bar is not None:
            postfix: dict[str, str] = {}
            if record.eval_accuracy is not None:
                postfix["acc"] = f"{record.eval_accuracy:.3f}"
            # The DP trainer's aggregate ε: the largest one when reported.
            for key in ("epsilon_max", "epsilon"):
                if key in record.metrics:
                    postfix["ε"] = f"{record.metrics[key]:.2f}"
                    break
            self._bar.set_postfix(postfix, refresh=False)
        super().round(record)

    def message(self, text: str) -> None:
        """A line of text (a JSON ``message`` line in JSON mode)."""
        if self._json:
            self._emit({"type": "message", "text": text})
        else:
            super().message(text)

    def _emit(self, obj: dict[str, Any]) -> None:
        print(json.dumps(obj, default=str), file=self._out, flush=True)


def summary_lines(report: PilotReport) -> list[str]:
    """The end-of-run text: accuracy comparison, privacy summary, report path."""
    cfg = report.config
    lines = [
        f"federated ({describe_mode(cfg)}) test accuracy "
        f"{report.federated_accuracy:.3f}"
        + (
            ""
            if report.centralised_accuracy is None
            else f" | centralised non-private {report.centralised_accuracy:.3f}"
            f" | gap {report.gap_points:.1f} pts"
        )
        + f" | majority class {report.majority_rate:.3f}",
        f"federated: {_pair(report.federated)}"
        + (
            ""
            if report.centralised is None
            else f" | centralised: {_pair(report.centralised)}"
        ),
        f"rounds {report.rounds_completed}/{report.plan.federation.rounds} in "
        f"{report.seconds:.1f} s",
    ]
    if report.stopped_early:
        lines.append(f"stopped early: {report.stopped_early}")
    privacy = report.plan.privacy
    if privacy is not None:
        spent = [i.epsilon_spent or 0.0 for i in report.institutions]
        lines.append(
            f"privacy: ε spent per institution {min(spent):.2f}–{max(spent):.2f} "
            f"of budget {privacy.epsilon_budget:g} (δ={privacy.delta:g})"
        )
        lines.extend(
            f"  {i.name}: ε {fmt(i.epsilon_spent, '.2f')} / "
            f"{fmt(i.epsilon_budget, 'g')} over {i.rounds_trained} rounds"
            for i in report.institutions
        )
    done = [c for c in report.coordinator if c.aborted is None]
    dropped = sum(c.dropped for c in done)
    lines.append(
        "coordinator saw only sums: Σ weights and Σ weighted updates, "
        f"{len(done)} rounds; {dropped} dropouts survived; aborted rounds "
        f"(too few survivors, model unchanged): "
        f"{sum(1 for c in report.coordinator if c.aborted)}"
    )
    sent = [i.mean_bytes_sent for i in report.institutions if i.mean_bytes_sent]
    if sent:
        lines.append(
            f"bytes sent per institution per round: {mean(sent):,.0f} "
            f"(float32 plaintext update {report.plaintext_bytes:,} B, "
            f"×{mean(sent) / report.plaintext_bytes:.1f})"
        )
    lines.append(f"report: {report.run_dir / 'report.md'}")
    return lines


def _pair(scores: TestScores) -> str:
    return (
        f"balanced accuracy {scores.balanced_accuracy:.3f}, ROC AUC "
        f"{fmt(scores.roc_auc)}"
    )
