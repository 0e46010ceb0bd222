"""Pure privacy-accounting functions: schedules, ε from a step history, σ calibration.

No function here keeps state: each builds a fresh Opacus accountant, so a
caller's accountant is never mutated behind its back (Opacus's own
``get_noise_multiplier`` assigns ``accountant.history``; we only call it on
accountants it creates itself).

The unit of accounting is a :class:`StepRun`: ``steps`` consecutive DP-SGD
steps of the Poisson-subsampled Gaussian mechanism with the same noise
multiplier σ and sample rate q, under add/remove-one neighbouring.  A client's
privacy loss is the composition of every run it executed, over all rounds it
joined (notes §4.1).

>>> round(epsilon_for_history([StepRun(1.1, 0.01, 1000)], 1e-5, Accountant.RDP), 5)
1.71177
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from dp.config import Accountant, DPConfig, check_noise_multiplier
from dp.errors import AccountingError, DPConfigError

__all__ = [
    "StepRun",
    "calibrate_noise_multiplier",
    "epsilon_for_history",
    "merge_runs",
    "sample_rate_for",
    "steps_per_epoch",
    "steps_per_round",
]

#: Opacus PRV's default discretisation error; its ε is an upper bound that is at
#: most about ``2 * PRV_EPS_ERROR`` above the true ε (Gopi et al. 2021).
PRV_EPS_ERROR = 0.01

#: Calibration bisects σ until ε is within this distance *below* the target.
CALIBRATION_TOLERANCE = 0.01


@dataclass(frozen=True, slots=True)
class StepRun:
    """``steps`` DP-SGD steps with noise multiplier σ and Poisson sample rate q."""

    noise_multiplier: float
    sample_rate: float
    steps: int


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Poisson batches per epoch, ``ceil(n / B)``, as Opacus's ``len(loader)``."""
    if num_examples < 1 or batch_size < 1:
        raise DPConfigError(
            f"num_examples and batch_size must be >= 1; found {num_examples!r}, "
            f"{batch_size!r}"
        )
    return -(-num_examples // batch_size)


def sample_rate_for(num_examples: int, batch_size: int) -> float:
    """Per-step inclusion probability q = 1/ceil(n/B) (Opacus's convention)."""
    return 1.0 / steps_per_epoch(num_examples, batch_size)


def steps_per_round(config: DPConfig, num_examples: int) -> int:
    """Local DP-SGD steps one round costs: ``local_epochs × ceil(n/B)``."""
    return config.local_epochs * steps_per_epoch(num_examples, config.batch_size)


def merge_runs(runs: Iterable[StepRun]) -> list[StepRun]:
    """Merge consecutive runs with identical (σ, q), as Opacus's accountants do."""
    merged: list[StepRun] = []
    for run in runs:
        if (
            merged
            and merged[-1].noise_multiplier == run.noise_multiplier
            and merged[-1].sample_rate == run.sample_rate
        ):
            last = merged.pop()
            run = StepRun(run.noise_multiplier, run.sample_rate, last.steps + run.steps)
        merged.append(run)
    return merged


def epsilon_for_history(
    history: Sequence[StepRun], delta: float, accountant: Accountant
) -> float:
    """ε after composing ``history`` at ``delta`` with a fresh Opacus accountant.

    An empty history costs nothing (ε = 0).  Raises :class:`AccountingError`
    when the accountant cannot produce a finite ε (e.g. PRV's known failure
    for very large ε, opacus#591).
    """
    runs = merge_runs(history)
    if not runs:
        return 0.0
    acct = create_accountant(mechanism=accountant.value)
    acct.history = [(r.noise_multiplier, r.sample_rate, r.steps) for r in runs]
    try:
        with warnings.catch_warnings():
            # RDP warns when the optimal order sits at the edge of its grid; the
            # value is still a valid (looser) upper bound, so it is not an error.
            warnings.simplefilter("ignore", UserWarning)
            eps = float(acct.get_epsilon(delta=delta))
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise AccountingError(
            f"{accountant.name} accountant could not compute ε for {len(runs)} "
            f"run(s) at δ={delta!r}: {exc}"
        ) from exc
    if not math.isfinite(eps) or eps < 0:
        raise AccountingError(
            f"{accountant.name} accountant returned ε={eps!r} for {len(runs)} run(s)"
        )
    return eps


def calibrate_noise_multiplier(config: DPConfig, num_examples: int) -> float:
    """σ for the whole planned schedule, or ``config.noise_multiplier`` if given.

    With ``target_epsilon`` set, σ is the smallest noise multiplier (to within
    the bisection tolerance) such that ``planned_rounds × local_epochs ×
    ceil(n/B)`` steps at q = 1/ceil(n/B) cost at most ``target_epsilon`` at δ,
    with the configured accountant.  It is computed once per client, never per
    round: per-round calibration would spend the target every round.
    """
    target = config.target_epsilon
    if target is None:
        return check_noise_multiplier(config.noise_multiplier)
    q = sample_rate_for(num_examples, config.batch_size)
    total_steps = config.planned_rounds * steps_per_round(config, num_examples)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sigma = float(
                get_noise_multiplier(
                    target_epsilon=target,
                    target_delta=config.delta,
                    sample_rate=q,
                    steps=total_steps,
                    accountant=config.accountant.value,
                    epsilon_tolerance=CALIBRATION_TOLERANCE,
                )
            )
    except ValueError as exc:
        raise DPConfigError(
            f"target_epsilon={config.target_epsilon!r} at delta={config.delta!r} "
            f"cannot be met for {total_steps} steps at q={q:.6g} with any noise "
            f"multiplier <= 1e6 ({exc}); raise target_epsilon or plan fewer steps"
        ) from exc
    # Opacus's bisection returns the upper end of its bracket; re-check rather
    # than trust it, since the whole budget logic rests on this inequality.
    eps = epsilon_for_history(
        [StepRun(sigma, q, total_steps)], config.delta, config.accountant
    )
    if eps > target:
        raise AccountingError(
            f"calibrated noise_multiplier={sigma!r} gives ε={eps!r} above "
            f"target_epsilon={config.target_epsilon!r}"
        )
    return sigma
