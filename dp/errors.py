"""The one exception tree of the ``dp`` package.

Every error ``dp`` raises on purpose derives from :class:`PrivacyError`, so a
caller (the FedAvg coordinator) can catch the whole family in one place.
Errors about a bad value also derive from :class:`ValueError` (and a missing
optional dependency from :class:`ImportError`), so generic handlers still see
them for what they are.  Messages follow one template: the name, the value
found, and what would be accepted.
"""

from __future__ import annotations

__all__ = [
    "AccountingError",
    "BudgetExceeded",
    "BudgetExceededError",
    "BudgetTooSmallError",
    "DPConfigError",
    "InvalidAuditInputError",
    "InvalidDeltaError",
    "InvalidLedgerEntryError",
    "InvalidLedgerHeadError",
    "InvalidNoiseInputError",
    "InvalidNoiseMultiplierError",
    "LedgerCorruptedError",
    "LedgerError",
    "LedgerMismatchError",
    "LedgerNotFoundError",
    "LedgerRollbackError",
    "MissingDependencyError",
    "PrivacyError",
    "UnsupportedAccountantError",
    "UnsupportedModelError",
]


class PrivacyError(Exception):
    """Base class of every error raised by ``dp``."""


class DPConfigError(PrivacyError, ValueError):
    """A DP parameter is out of range or inconsistent with another one."""


class InvalidDeltaError(DPConfigError):
    """δ is not in (0, 1/n_local): a larger δ permits releasing whole records."""


class InvalidNoiseMultiplierError(DPConfigError):
    """The noise multiplier is not a finite positive number."""


class BudgetTooSmallError(DPConfigError):
    """The ε budget is below the cost of a single round: no round could ever run."""


class UnsupportedModelError(DPConfigError):
    """The model has layers Opacus cannot compute per-sample gradients for."""


class UnsupportedAccountantError(DPConfigError):
    """The accountant cannot state ε under the configured neighbouring relation."""


class InvalidAuditInputError(PrivacyError, ValueError):
    """An audit was given counts, scores or settings it cannot be computed from."""


class InvalidNoiseInputError(PrivacyError, ValueError):
    """A noise generator was given a key, length, scale or buffer it cannot use."""


class MissingDependencyError(PrivacyError, ImportError):
    """An optional package a requested feature needs is not installed."""


class BudgetExceededError(PrivacyError):
    """Training this round would take the client past its ε budget.

    Raised *before* any training or ledger write: the client's state and its
    ledger bytes are unchanged.  The coordinator carries on without the client.
    """

    def __init__(
        self,
        *,
        client_id: str,
        round_idx: int,
        epsilon_spent: float,
        epsilon_projected: float,
        epsilon_budget: float,
    ) -> None:
        self.client_id = client_id
        self.round_idx = round_idx
        self.epsilon_spent = epsilon_spent
        self.epsilon_projected = epsilon_projected
        self.epsilon_budget = epsilon_budget
        self.reason = (
            f"client {client_id!r} declines round {round_idx}: it has spent "
            f"ε={epsilon_spent:.4f} and this round would bring it to "
            f"ε={epsilon_projected:.4f}, above its budget ε={epsilon_budget:.4f}"
        )
        super().__init__(self.reason)


#: Both spellings name one class (``N818`` wants the ``Error`` suffix).
BudgetExceeded = BudgetExceededError


class AccountingError(PrivacyError):
    """An accountant could not produce ε, or disagreed with the ledger."""


class LedgerError(PrivacyError):
    """Base class of privacy-ledger failures."""


class LedgerNotFoundError(LedgerError):
    """The ledger file does not exist (and the caller did not allow a new one)."""


class InvalidLedgerEntryError(LedgerError, ValueError):
    """A ledger entry has a field of the wrong type or out of its range."""


class InvalidLedgerHeadError(LedgerError, ValueError):
    """A recorded ledger head (or a file of them) is malformed."""


class LedgerRollbackError(LedgerError):
    """A ledger is behind the head the coordinator last recorded for it.

    A ledger that lost its newest entries (truncated, restored from an old
    backup, replaced by another file) would let its client re-spend privacy it
    already spent, so the client refuses to train on it.  ``found`` and
    ``expected`` are :class:`dp.LedgerHead` values.
    """

    def __init__(
        self, *, client_id: str, path: str, found: object, expected: object, why: str
    ) -> None:
        self.client_id = client_id
        self.path = path
        self.found = found
        self.expected = expected
        super().__init__(
            f"client {client_id!r}: ledger {path} is behind the head the "
            f"coordinator recorded ({why}): found {found}, expected {expected}; "
            "refusing to train on a rolled-back ledger"
        )


class LedgerCorruptedError(LedgerError):
    """The ledger file fails verification; ``line`` is the first bad line (1-based)."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        super().__init__(f"ledger {path}: line {line}: {problem}")


class LedgerMismatchError(LedgerError):
    """A valid ledger belongs to another client or another δ/accountant setting."""
