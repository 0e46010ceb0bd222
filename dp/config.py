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
>>> cfg.accountant is Accountant.RDP
True
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from dp.errors import DPConfigError, InvalidDeltaError, InvalidNoiseMultiplierError

__all__ = ["Accountant", "DPConfig", "GradSampleMode"]


class Accountant(enum.Enum):
    """Privacy accountant used to turn the step history into ε.

    RDP (Mironov et al. 2019) is fast and robust but 8–13 % looser; PRV (Gopi et
    al. 2021) is tight, returns an upper bound with ``eps_error=0.01``, and is
    slower on heterogeneous histories.  Values are Opacus's mechanism names.
    """

    RDP = "rdp"
    PRV = "prv"


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


def _finite_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DPConfigError(f"{name} must be a real number; found {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise DPConfigError(f"{name} must be finite and > 0; found {value!r}")


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DPConfigError(f"{name} must be an integer >= 1; found {value!r}")


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
    local_epochs × ceil(n/batch_size)`` steps) must be set.  ``batch_size`` is
    the *expected* Poisson batch size: the sample rate is
    ``1/ceil(n/batch_size)``, as in Opacus, and the summed noisy gradient is
    divided by ``batch_size`` (public), not by a count derived from n.
    """

    delta: float
    max_grad_norm: float
    epsilon_budget: float
    planned_rounds: int
    batch_size: int
    local_epochs: int = 1
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    accountant: Accountant = Accountant.RDP
    grad_sample_mode: GradSampleMode = GradSampleMode.GHOST

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
        if not isinstance(self.accountant, Accountant):
            raise DPConfigError(
                "accountant must be an Accountant "
                f"({', '.join(a.name for a in Accountant)}); "
                f"found {self.accountant!r}"
            )
        if not isinstance(self.grad_sample_mode, GradSampleMode):
            raise DPConfigError(
                "grad_sample_mode must be a GradSampleMode "
                f"({', '.join(m.name for m in GradSampleMode)}); "
                f"found {self.grad_sample_mode!r}"
            )
