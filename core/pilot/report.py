"""What a pilot produced: `PilotReport` and the values it is made of.

`PilotReport` is the result of `core.pilot.runner.run_pilot`: final accuracies,
per-institution rows, what the coordinator saw each round, the curves and
the provenance. `core.pilot.markdown` writes it as ``report.md``,
`core.pilot.plots` draws its PNGs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.pilot.plan import RunPlan
from core.pilot.provenance import Provenance
from core.pilot.schema import PilotConfig

__all__ = [
    "CoordinatorRound",
    "InstitutionRow",
    "PilotReport",
    "TestScores",
    "describe_mode",
    "fmt",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class InstitutionRow:
    """One institution: its data, how the final models do on it, its privacy.

    `eval_on` says which rows the accuracies were measured on: the site's
    held-out test rows (natural split) or its own training rows (a synthetic
    split has no site test rows). Rows, labels, imputed values and
    accuracies are the simulation's own view: in a deployment they stay at
    the institution. `epsilon_spent` is the ledger's total over every run,
    `rounds_trained` this run's rounds.
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
    imputed: int


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
    clipped_fraction: float | None
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
    ledger_dir: Path | None
    imputed_unheld: int
    provenance: Provenance
    heads_by_round: tuple[tuple[int, tuple[tuple[str, int, str], ...]], ...]

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
