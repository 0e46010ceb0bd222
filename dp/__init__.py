"""fedshield ``dp``: client-side DP-SGD with a budget, a durable ledger and audits.

Public API (everything else is internal):

* configuration: :class:`DPConfig`, :class:`Neighbouring`, :class:`Accountant`,
  :class:`GradSampleMode`;
* models: :func:`make_private_compatible` (call once on the initial model);
* clients: :class:`PrivateClient` (one per client for the whole federation),
  :class:`PrivateRoundResult`, :class:`LocalOptimizer`;
* accounting: :func:`calibrate_noise_multiplier`, :func:`epsilon_for_history`,
  :func:`epsilon_lower_bound`, :func:`epsilon_from_entries`,
  :class:`StepRun`, :class:`Mechanism`;
* ledger: :class:`PrivacyLedger`, :class:`LedgerEntry`, :func:`read_ledger`,
  :class:`LedgerHead`, :func:`read_recorded_heads`;
* randomness: :class:`SecureRandom` (AES-256-CTR or ChaCha20, see
  :class:`Keystream`), :class:`ChaCha20Random`;
* errors: :class:`PrivacyError` and its subclasses.

Names are loaded on first use, so ``fedshield audit`` (which needs the ledger
and accounting modules only) does not pay for importing torch and Opacus.
``dp`` never imports ``core`` or ``secagg``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dp import errors as _errors

if TYPE_CHECKING:
    from dp.accounting import (
        Mechanism,
        StepRun,
        epsilon_for_history,
        epsilon_lower_bound,
        sample_rate_for,
        steps_per_round,
    )
    from dp.calibration import calibrate_noise_multiplier
    from dp.client import PrivateClient
    from dp.config import (
        Accountant,
        DPConfig,
        GradSampleMode,
        LocalOptimizer,
        Neighbouring,
    )
    from dp.engine import make_private_compatible
    from dp.errors import (
        AccountingError,
        BudgetExceeded,
        BudgetExceededError,
        BudgetTooSmallError,
        DPConfigError,
        InvalidAuditInputError,
        InvalidDeltaError,
        InvalidLedgerEntryError,
        InvalidLedgerHeadError,
        InvalidNoiseInputError,
        InvalidNoiseMultiplierError,
        LedgerCorruptedError,
        LedgerError,
        LedgerMismatchError,
        LedgerNotFoundError,
        LedgerRollbackError,
        MissingDependencyError,
        PrivacyError,
        UnsupportedAccountantError,
        UnsupportedModelError,
    )
    from dp.ledger import PrivacyLedger
    from dp.ledger_format import LedgerEntry, read_ledger
    from dp.ledger_heads import LedgerHead, read_recorded_heads
    from dp.noise import ChaCha20Random, Keystream, SecureRandom
    from dp.round_result import PrivateRoundResult

    LedgerCorrupted = LedgerCorruptedError

# dp.errors holds only exception classes: cheap to load with the package.
_ERRORS = tuple(_errors.__all__)
#: Public name -> the module that defines it.
_HOME: dict[str, str] = {
    **dict.fromkeys(_ERRORS, "dp.errors"),
    **dict.fromkeys(
        (
            "Mechanism",
            "StepRun",
            "epsilon_for_history",
            "epsilon_lower_bound",
            "sample_rate_for",
            "steps_per_round",
        ),
        "dp.accounting",
    ),
    "calibrate_noise_multiplier": "dp.calibration",
    "PrivateClient": "dp.client",
    "PrivateRoundResult": "dp.round_result",
    **dict.fromkeys(
        ("Accountant", "DPConfig", "GradSampleMode", "LocalOptimizer", "Neighbouring"),
        "dp.config",
    ),
    "make_private_compatible": "dp.engine",
    "PrivacyLedger": "dp.ledger",
    "LedgerEntry": "dp.ledger_format",
    "read_ledger": "dp.ledger_format",
    "LedgerHead": "dp.ledger_heads",
    "read_recorded_heads": "dp.ledger_heads",
    **dict.fromkeys(("ChaCha20Random", "Keystream", "SecureRandom"), "dp.noise"),
}
#: Old spellings kept as aliases of one class.
_ALIASES = {"LedgerCorrupted": "LedgerCorruptedError"}


def __getattr__(name: str) -> Any:
    target = _ALIASES.get(name, name)
    home = _HOME.get(target)
    if home is None:
        raise AttributeError(f"module 'dp' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), target)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def epsilon_from_entries(entries: Sequence[LedgerEntry]) -> float:
    """ε of the composition of all ``entries`` under their recorded settings.

    δ, the accountant and the neighbouring relation are the entries' own (one
    ledger records one of each).  An empty sequence costs nothing.
    """
    from dp.accounting import epsilon_for_history

    if not entries:
        return 0.0
    first = entries[0]
    return epsilon_for_history(
        [e.step_run for e in entries],
        first.delta,
        first.accountant,
        neighbouring=first.neighbouring,
    )


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
    "InvalidLedgerHeadError",
    "InvalidNoiseInputError",
    "InvalidNoiseMultiplierError",
    "Keystream",
    "LedgerCorrupted",
    "LedgerCorruptedError",
    "LedgerEntry",
    "LedgerError",
    "LedgerHead",
    "LedgerMismatchError",
    "LedgerNotFoundError",
    "LedgerRollbackError",
    "LocalOptimizer",
    "Mechanism",
    "MissingDependencyError",
    "Neighbouring",
    "PrivacyError",
    "PrivacyLedger",
    "PrivateClient",
    "PrivateRoundResult",
    "SecureRandom",
    "StepRun",
    "UnsupportedAccountantError",
    "UnsupportedModelError",
    "calibrate_noise_multiplier",
    "epsilon_for_history",
    "epsilon_from_entries",
    "epsilon_lower_bound",
    "make_private_compatible",
    "read_ledger",
    "read_recorded_heads",
    "sample_rate_for",
    "steps_per_round",
]
