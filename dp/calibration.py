"""Noise calibration: the σ that spends a target ε over a whole planned schedule.

>>> from dp.config import DPConfig
>>> cfg = DPConfig(target_epsilon=3.0, delta=1e-5, max_grad_norm=1.0,
...                epsilon_budget=3.0, planned_rounds=10, batch_size=10)
>>> round(calibrate_noise_multiplier(cfg, 1000), 2)  # replace-one, PLD
0.97
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from dp.accounting import (
    StepRun,
    epsilon_for_history,
    loss_release_run,
    sample_rate_for,
    steps_per_round,
)
from dp.config import Accountant, DPConfig, Neighbouring, check_noise_multiplier
from dp.errors import AccountingError, DPConfigError

__all__ = [
    "CALIBRATION_TOLERANCE",
    "MAX_NOISE_MULTIPLIER",
    "MIN_CALIBRATED_NOISE_MULTIPLIER",
    "calibrate_noise_multiplier",
]

#: Calibration searches σ until ε is within this distance *below* the target.
CALIBRATION_TOLERANCE = 0.01

#: Above this noise multiplier a target is declared unreachable (as Opacus).
MAX_NOISE_MULTIPLIER = 1e6

#: Calibration never returns a σ below this: no multi-step DP-SGD schedule has a
#: useful ε there, and PLD grids grow as 1/σ².
MIN_CALIBRATED_NOISE_MULTIPLIER = 0.25


class _UnreachableTargetError(Exception):
    """Internal: no noise multiplier up to the cap meets the target."""


def _log_ratio(eps: float, target: float) -> float:
    if not math.isfinite(eps):
        return math.inf
    return math.log(eps / target) if eps > 0 else -math.inf


@functools.lru_cache(maxsize=1024)
def _calibrated_sigma(
    target: float,
    delta: float,
    q: float,
    steps: int,
    accountant: Accountant,
    neighbouring: Neighbouring,
    fixed: tuple[StepRun, ...] = (),
) -> tuple[float, float]:
    """(σ, ε(σ)) with target − tolerance ≤ ε(σ) ≤ target; pure, hence cached.

    ``fixed`` are the schedule's other charges (the planned loss releases),
    composed with the DP-SGD steps at every σ tried.  ε(σ) is continuous and
    decreasing.  The search keeps a bracket ``lo`` (ε > target) < ``hi``
    (ε ≤ target), found by doubling/halving from σ = 1, and shrinks it with
    the Illinois variant of regula falsi on log ε(σ) − log target (bisection
    where ε(lo) is infinite), until ε(hi) is within the tolerance.  This is
    the contract of Opacus's ``get_noise_multiplier`` (which bisects [0, 20] in
    ~13 evaluations); it takes ~4–7 evaluations.  Institutions with the same
    ceil(n/B) share q and the step count, so the cache serves them without
    any evaluation.
    """

    def eps(sigma: float) -> float:
        try:
            return epsilon_for_history(
                [StepRun(sigma, q, steps), *fixed],
                delta,
                accountant,
                neighbouring=neighbouring,
            )
        except AccountingError:
            # Accountants fail only at very large ε: for the search, "too
            # large to compute" is on the too-little-noise side.
            return math.inf

    lo, hi = 1.0, 1.0
    e_lo, e_hi = math.inf, eps(1.0)
    if e_hi > target:
        while e_hi > target:
            if hi >= MAX_NOISE_MULTIPLIER:
                raise _UnreachableTargetError
            lo, e_lo = hi, e_hi
            hi = min(2 * hi, MAX_NOISE_MULTIPLIER)
            e_hi = eps(hi)
    else:
        while (
            target - e_hi > CALIBRATION_TOLERANCE
            and hi / 2 >= MIN_CALIBRATED_NOISE_MULTIPLIER
        ):
            lo = hi / 2
            e_lo = eps(lo)
            if e_lo > target:
                break
            hi, e_hi = lo, e_lo
    return _illinois(eps, target, (lo, e_lo), (hi, e_hi))


def _illinois(
    eps: Callable[[float], float],
    target: float,
    low: tuple[float, float],
    high: tuple[float, float],
) -> tuple[float, float]:
    """Shrink the bracket [lo, hi] until target − tolerance ≤ ε(hi) ≤ target."""
    (lo, e_lo), (hi, e_hi) = low, high
    if e_lo <= target:  # halving stopped at the floor: hi is the answer
        return hi, e_hi
    g_lo, g_hi = _log_ratio(e_lo, target), _log_ratio(e_hi, target)
    kept = 0  # +1: lo was kept last time, -1: hi was
    while target - e_hi > CALIBRATION_TOLERANCE:
        mid = (lo + hi) / 2
        if math.isfinite(g_lo) and math.isfinite(g_hi) and g_lo != g_hi:
            guess = hi - g_hi * (hi - lo) / (g_hi - g_lo)
            if lo < guess < hi:
                mid = guess
        if not lo < mid < hi:  # the bracket cannot shrink in floating point
            break
        e_mid = eps(mid)
        g_mid = _log_ratio(e_mid, target)
        if e_mid > target:
            lo, e_lo, g_lo = mid, e_mid, g_mid
            if kept == -1:
                g_hi /= 2
            kept = -1
        else:
            hi, e_hi, g_hi = mid, e_mid, g_mid
            if kept == 1:
                g_lo /= 2
            kept = 1
    return hi, e_hi


def calibrate_noise_multiplier(config: DPConfig, num_examples: int) -> float:
    """σ for the whole planned schedule, or ``config.noise_multiplier`` if given.

    With ``target_epsilon`` set, σ is a noise multiplier such that
    ``planned_rounds × local_epochs × ceil(n/B)`` steps at q = 1/ceil(n/B),
    composed with the ``planned_rounds`` loss releases when ``release_loss``
    is on, cost at most ``target_epsilon`` at δ under the configured relation
    and accountant, and at least ``target_epsilon − CALIBRATION_TOLERANCE``
    (so σ is within the search tolerance of the smallest such σ, or is
    :data:`MIN_CALIBRATED_NOISE_MULTIPLIER`).  It is computed once per client,
    never per round: per-round calibration would spend the target every
    round.  Results are cached by their inputs.
    """
    target = config.target_epsilon
    if target is None:
        return check_noise_multiplier(config.noise_multiplier)
    q = sample_rate_for(num_examples, config.batch_size)
    total_steps = config.planned_rounds * steps_per_round(config, num_examples)
    loss = loss_release_run(config, config.planned_rounds)
    fixed = () if loss is None else (loss,)
    try:
        sigma, eps = _calibrated_sigma(
            float(target),
            float(config.delta),
            q,
            total_steps,
            config.accountant,
            config.neighbouring,
            fixed,
        )
    except _UnreachableTargetError:
        extra = (
            f" and {config.planned_rounds} loss releases at "
            f"loss_noise_multiplier={config.loss_noise_multiplier!r}"
            if fixed
            else ""
        )
        raise DPConfigError(
            f"target_epsilon={config.target_epsilon!r} at delta={config.delta!r} "
            f"cannot be met for {total_steps} steps at q={q:.6g}{extra} with any "
            f"noise multiplier <= {MAX_NOISE_MULTIPLIER:g}; raise target_epsilon "
            "or plan fewer steps"
        ) from None
    # The whole budget logic rests on this inequality: never return a σ whose
    # own ε (computed by the same accountant) exceeds the target.
    if not eps <= target:
        raise AccountingError(
            f"calibrated noise_multiplier={sigma!r} gives ε={eps!r} above "
            f"target_epsilon={config.target_epsilon!r}"
        )
    return sigma
