"""fedshield ``dp``: client-side DP-SGD with a budget, a durable ledger and audits.

Public API (everything else is internal):

* configuration: :class:`DPConfig`, :class:`Accountant`, :class:`GradSampleMode`;
* models: :func:`make_private_compatible` (call once on the initial model);
* clients: :class:`PrivateClient` (one per client for the whole federation),
  :class:`PrivateRoundResult`, :class:`LocalOptimizer`;
* accounting: :func:`calibrate_noise_multiplier`, :func:`epsilon_for_history`,
  :func:`epsilon_from_entries`, :class:`StepRun`;
* ledger: :class:`PrivacyLedger`, :class:`LedgerEntry`, :func:`read_ledger`;
* randomness: :class:`ChaCha20Random`;
* errors: :class:`PrivacyError` and its subclasses.

``dp`` never imports ``core`` or ``secagg``.
"""

from __future__ import annotations

from collections.abc import Sequence

from dp.accounting import (
    StepRun,
    calibrate_noise_multiplier,
    epsilon_for_history,
    sample_rate_for,
    steps_per_round,
)
from dp.client import PrivateClient, PrivateRoundResult
from dp.config import Accountant, DPConfig, GradSampleMode
from dp.engine import LocalOptimizer, make_private_compatible
from dp.errors import (
    AccountingError,
    BudgetExceeded,
    BudgetExceededError,
    BudgetTooSmallError,
    DPConfigError,
    InvalidAuditInputError,
    InvalidDeltaError,
    InvalidLedgerEntryError,
    InvalidNoiseMultiplierError,
    LedgerCorruptedError,
    LedgerError,
    LedgerMismatchError,
    LedgerNotFoundError,
    MissingDependencyError,
    PrivacyError,
    UnsupportedModelError,
)
from dp.ledger import PrivacyLedger
from dp.ledger_format import LedgerEntry, read_ledger
from dp.noise import ChaCha20Random

LedgerCorrupted = LedgerCorruptedError


def epsilon_from_entries(
    entries: Sequence[LedgerEntry], delta: float, accountant: Accountant
) -> float:
    """ε of the composition of all ``entries`` at ``delta`` with ``accountant``."""
    return epsilon_for_history([e.step_run for e in entries], delta, accountant)


__all__ = [
    "Accountant",
    "AccountingError",
    "BudgetExceeded",
    "BudgetExceededError",
    "BudgetTooSmallError",
    "ChaCha20Random",
    "DPConfig",
    "DPConfigError",
    "GradSampleMode",
    "InvalidAuditInputError",
    "InvalidDeltaError",
    "InvalidLedgerEntryError",
    "InvalidNoiseMultiplierError",
    "LedgerCorrupted",
    "LedgerCorruptedError",
    "LedgerEntry",
    "LedgerError",
    "LedgerMismatchError",
    "LedgerNotFoundError",
    "LocalOptimizer",
    "MissingDependencyError",
    "PrivacyError",
    "PrivacyLedger",
    "PrivateClient",
    "PrivateRoundResult",
    "StepRun",
    "UnsupportedModelError",
    "calibrate_noise_multiplier",
    "epsilon_for_history",
    "epsilon_from_entries",
    "make_private_compatible",
    "read_ledger",
    "sample_rate_for",
    "steps_per_round",
]
