"""Frozen, validated DP configuration for one client's local DP-SGD.

A :class:`DPConfig` holds only privacy-relevant settings: everything in it is
either recorded in the ledger or determines what is.  It is valid from birth:
``__post_init__`` checks each value and the relations between values, and
raises a :class:`~dp.errors.DPConfigError` subclass naming the value found and
what would be accepted.  Checks that need the client's example count (δ below
1/n, a budget that covers one round) happen when a client is built
(:class:`dp.client.PrivateClient`).

>>> cfg = DPConfig(noise_multiplier=1.1, delta=1e-5, max_grad_norm=1.0,
...                epsilon_budget=8.0, planned_rounds=10, batch_size=32)
>>> cfg.neighbouring is Neighbouring.REPLACE_ONE, cfg.accountant is Accountant.PLD
(True, True)
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from dp.errors import (
    DPConfigError,
    InvalidDeltaError,
    InvalidNoiseMultiplierError,
    UnsupportedAccountantError,
)

__all__ = [
    "Accountant",
    "DPConfig",
    "GradSampleMode",
    "LocalOptimizer",
    "Neighbouring",
    "check_accountant_supports",
]


class LocalOptimizer(enum.Enum):
    """The optimizer DP-SGD's noisy gradient is fed to."""

    SGD = "sgd"
    ADAM = "adam"


class Neighbouring(enum.Enum):
    """Which pairs of datasets ε is stated for: what one protected record is.

    * ``REPLACE_ONE``: the datasets differ in the *content* of one record, and
      have the same size.  Right when the example count is public: the sample
      rate q = 1/ceil(n/B), the step count and a per-client weight all follow
      from n, so n must not be what the guarantee hides.
    * ``ADD_REMOVE``: one dataset has one record more.  Valid only where n and
      everything derived from it stay inside the institution.
    """

    REPLACE_ONE = "replace_one"
    ADD_REMOVE = "add_remove"


class Accountant(enum.Enum):
    """Privacy accountant used to turn the ledger's history into ε.

    * ``PLD``: dp-accounting's privacy loss distributions (pessimistic, grid
      1e-3); supports both neighbouring relations.  The default.
    * ``RDP``: Opacus's Rényi-DP accountant (Mironov et al. 2019); fast but
      8–13 % looser; **add/remove-one only**.
    * ``PRV``: Opacus's PRV accountant (Gopi et al. 2021), an upper bound with
      ``eps_error=0.01``; **add/remove-one only**.

    Opacus's RDP and PRV analyses of the Poisson-subsampled Gaussian are for
    add/remove-one neighbours; a configuration pairing them with
    ``Neighbouring.REPLACE_ONE`` is refused (no replace-one bound is derived
    from them).
    """

    RDP = "rdp"
    PRV = "prv"
    PLD = "pld"


#: Which accountant can state ε under which relation.
SUPPORTED_RELATIONS: dict[Accountant, frozenset[Neighbouring]] = {
    Accountant.PLD: frozenset(Neighbouring),
    Accountant.RDP: frozenset({Neighbouring.ADD_REMOVE}),
    Accountant.PRV: frozenset({Neighbouring.ADD_REMOVE}),
}


class GradSampleMode(enum.Enum):
    """How per-example gradients are clipped.

    ``GHOST`` (the default) is Opacus's fast gradient clipping: per-example
    gradient norms without materialising per-example gradients, then one
    backward pass of the clipped loss.  Where a model does not allow it (tied
    weights, a Linear or Embedding module called twice per forward pass) the
    client falls back to ``HOOKS`` and logs why.  ``HOOKS`` and ``FUNCTORCH``
    materialise per-example gradients.  Opacus's ``"ew"`` cannot handle empty
    Poisson batches and is not offered.
    """

    GHOST = "ghost"
    HOOKS = "hooks"
    FUNCTORCH = "functorch"


def check_accountant_supports(
    accountant: Accountant, neighbouring: Neighbouring
) -> None:
    """Raise :class:`UnsupportedAccountantError` unless the pair is valid."""
    if neighbouring not in SUPPORTED_RELATIONS[accountant]:
        raise UnsupportedAccountantError(
            f"accountant={accountant.name} cannot state ε under "
            f"neighbouring={neighbouring.name}: Opacus's RDP and PRV analyses "
            "of the Poisson-subsampled Gaussian are add/remove-one only; use "
            "accountant=PLD (dp-accounting, supports REPLACE_ONE), or "
            "neighbouring=ADD_REMOVE where example counts stay secret"
        )


def _finite_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DPConfigError(f"{name} must be a real number; found {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise DPConfigError(f"{name} must be finite and > 0; found {value!r}")


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DPConfigError(f"{name} must be an integer >= 1; found {value!r}")


def _enum(name: str, value: object, kind: type[enum.Enum]) -> None:
    if not isinstance(value, kind):
        raise DPConfigError(
            f"{name} must be a member of {kind.__name__} "
            f"({', '.join(m.name for m in kind)}); found {value!r}"
        )


def check_noise_multiplier(value: object) -> float:
    """Return ``value`` as a float if it is a usable noise multiplier, else raise."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidNoiseMultiplierError(
            f"noise_multiplier must be a finite number > 0 (e.g. 0.5 to 5); "
            f"found {value!r}"
        )
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class DPConfig:
    """Privacy settings for local DP-SGD, shared by all rounds of a federation.

    Exactly one of ``noise_multiplier`` (σ given) and ``target_epsilon`` (σ
    calibrated once, for the whole planned schedule of ``planned_rounds ×
    local_epochs × ceil(n/batch_size)`` steps plus the planned loss releases)
    must be set.  ``batch_size`` is the *expected* Poisson batch size: the
    sample rate is ``1/ceil(n/batch_size)``, as in Opacus, and the summed noisy
    gradient is divided by ``batch_size`` (public), not by a count derived
    from n.

    By default nothing but the noised update leaves a client.  With
    ``release_loss`` a round also releases the mean per-example training loss,
    clipped to ``[0, loss_bound]``, with Gaussian noise of standard deviation
    ``loss_noise_multiplier × loss_bound`` on the sum; it is charged to the
    ledger as a mechanism of its own before it is released.  The mean divides
    by the example count, so it needs ``Neighbouring.REPLACE_ONE``.
    """

    delta: float
    max_grad_norm: float
    epsilon_budget: float
    planned_rounds: int
    batch_size: int
    local_epochs: int = 1
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    neighbouring: Neighbouring = Neighbouring.REPLACE_ONE
    accountant: Accountant = Accountant.PLD
    grad_sample_mode: GradSampleMode = GradSampleMode.GHOST
    release_loss: bool = False
    loss_bound: float | None = None
    loss_noise_multiplier: float | None = None

    def __post_init__(self) -> None:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise DPConfigError(
                "exactly one of noise_multiplier and target_epsilon must be set; "
                f"found noise_multiplier={self.noise_multiplier!r}, "
                f"target_epsilon={self.target_epsilon!r}"
            )
        if self.noise_multiplier is not None:
            check_noise_multiplier(self.noise_multiplier)
        if isinstance(self.delta, bool) or not isinstance(self.delta, (int, float)):
            raise InvalidDeltaError(
                f"delta must be a real number; found {self.delta!r}"
            )
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise InvalidDeltaError(
                f"delta must be in (0, 1), and below 1/n_local; found {self.delta!r}"
            )
        _finite_positive("max_grad_norm", self.max_grad_norm)
        _finite_positive("epsilon_budget", self.epsilon_budget)
        _positive_int("planned_rounds", self.planned_rounds)
        _positive_int("batch_size", self.batch_size)
        _positive_int("local_epochs", self.local_epochs)
        if self.target_epsilon is not None:
            _finite_positive("target_epsilon", self.target_epsilon)
            if self.target_epsilon > self.epsilon_budget:
                raise DPConfigError(
                    f"target_epsilon must be <= epsilon_budget "
                    f"({self.epsilon_budget!r}), or the planned schedule could "
                    f"never finish; found {self.target_epsilon!r}"
                )
        _enum("neighbouring", self.neighbouring, Neighbouring)
        _enum("accountant", self.accountant, Accountant)
        _enum("grad_sample_mode", self.grad_sample_mode, GradSampleMode)
        check_accountant_supports(self.accountant, self.neighbouring)
        self._check_loss_release()

    def _check_loss_release(self) -> None:
        if not isinstance(self.release_loss, bool):
            raise DPConfigError(
                f"release_loss must be True or False; found {self.release_loss!r}"
            )
        if not self.release_loss:
            if self.loss_bound is not None or self.loss_noise_multiplier is not None:
                raise DPConfigError(
                    "loss_bound and loss_noise_multiplier apply only with "
                    "release_loss=True; found loss_bound="
                    f"{self.loss_bound!r}, loss_noise_multiplier="
                    f"{self.loss_noise_multiplier!r}"
                )
            return
        if self.neighbouring is not Neighbouring.REPLACE_ONE:
            raise DPConfigError(
                "release_loss needs neighbouring=REPLACE_ONE: the released mean "
                "divides by the example count, which ADD_REMOVE treats as "
                f"secret; found neighbouring={self.neighbouring.name}"
            )
        _finite_positive("loss_bound", self.loss_bound)
        _finite_positive("loss_noise_multiplier", self.loss_noise_multiplier)
