"""Pure privacy-accounting functions: schedules, ε from a step history, σ calibration.

No function here keeps state: each builds a fresh Opacus accountant, so a
caller's accountant is never mutated behind its back (Opacus's own
``get_noise_multiplier`` assigns ``accountant.history``; we only call it on
accountants it creates itself).

The unit of accounting is a :class:`StepRun`: ``steps`` consecutive DP-SGD
steps of the Poisson-subsampled Gaussian mechanism with the same noise
multiplier σ and sample rate q, under add/remove-one neighbouring.  A client's
privacy loss is the composition of every run it executed, over all rounds it
joined.

>>> round(epsilon_for_history([StepRun(1.1, 0.01, 1000)], 1e-5, Accountant.RDP), 5)
1.71177
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from opacus.accountants import create_accountant

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

#: Calibration searches σ until ε is within this distance *below* the target.
CALIBRATION_TOLERANCE = 0.01

#: Above this noise multiplier a target is declared unreachable (as Opacus).
MAX_NOISE_MULTIPLIER = 1e6


class _UnreachableTargetError(Exception):
    """Internal: no noise multiplier up to the cap meets the target."""


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
    when the accountant cannot produce a finite ε (Opacus's PRV accountant
    fails to discretise its grid at very large ε).
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


def _epsilon_or_inf(
    sigma: float, q: float, steps: int, delta: float, accountant: Accountant
) -> float:
    try:
        return epsilon_for_history([StepRun(sigma, q, steps)], delta, accountant)
    except AccountingError:
        # Opacus's PRV fails only at very large ε: for the search, "too large
        # to compute" is on the too-little-noise side.
        return math.inf


@functools.lru_cache(maxsize=1024)
def _calibrated_sigma(
    target: float, delta: float, q: float, steps: int, accountant: Accountant
) -> tuple[float, float]:
    """(σ, ε(σ)) with target − tolerance ≤ ε(σ) ≤ target; pure, hence cached.

    ε(σ) is continuous and decreasing.  The search keeps a bracket
    ``lo`` (ε > target) < ``hi`` (ε ≤ target), found by doubling/halving from
    σ = 1, and shrinks it with the Illinois variant of regula falsi on
    log ε(σ) − log target (bisection where ε(lo) is infinite), until ε(hi) is
    within the tolerance.  This is the contract of Opacus's
    ``get_noise_multiplier`` (which bisects [0, 20] in ~13 evaluations); it
    takes ~4–7 evaluations.  Institutions with the same ceil(n/B) share q and
    the step count, so the cache serves them without any evaluation.
    """

    def eps(sigma: float) -> float:
        return _epsilon_or_inf(sigma, q, steps, delta, accountant)

    lo, hi = 1.0, 1.0
    e_lo, e_hi = math.inf, eps(1.0)
    if e_hi > target:
        lo, e_lo = hi, e_hi
        while e_hi > target:
            if hi >= MAX_NOISE_MULTIPLIER:
                raise _UnreachableTargetError
            lo, e_lo = hi, e_hi
            hi = min(2 * hi, MAX_NOISE_MULTIPLIER)
            e_hi = eps(hi)
    else:
        # Below 1e-3 no realistic schedule stays under a target; stop there
        # rather than halve towards 0 (ε(hi) <= target holds either way).
        while target - e_hi > CALIBRATION_TOLERANCE and hi > 1e-3:
            lo = hi / 2
            e_lo = eps(lo)
            if e_lo > target:
                break
            hi, e_hi = lo, e_lo
    g_lo = math.log(e_lo / target) if math.isfinite(e_lo) else math.inf
    g_hi = math.log(e_hi / target) if e_hi > 0 else -math.inf
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
        g_mid = math.log(e_mid / target) if math.isfinite(e_mid) else math.inf
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
    ``planned_rounds × local_epochs × ceil(n/B)`` steps at q = 1/ceil(n/B) cost
    at most ``target_epsilon`` at δ with the configured accountant, and at
    least ``target_epsilon − CALIBRATION_TOLERANCE`` (so σ is within the
    search tolerance of the smallest such σ).  It is computed once per client,
    never per round: per-round calibration would spend the target every round.
    Results are cached by (target, δ, q, steps, accountant).
    """
    target = config.target_epsilon
    if target is None:
        return check_noise_multiplier(config.noise_multiplier)
    q = sample_rate_for(num_examples, config.batch_size)
    total_steps = config.planned_rounds * steps_per_round(config, num_examples)
    try:
        sigma, eps = _calibrated_sigma(
            float(target), float(config.delta), q, total_steps, config.accountant
        )
    except _UnreachableTargetError:
        raise DPConfigError(
            f"target_epsilon={config.target_epsilon!r} at delta={config.delta!r} "
            f"cannot be met for {total_steps} steps at q={q:.6g} with any noise "
            f"multiplier <= {MAX_NOISE_MULTIPLIER:g}; raise target_epsilon or "
            "plan fewer steps"
        ) from None
    # The whole budget logic rests on this inequality: never return a σ whose
    # own ε (computed by the same accountant) exceeds the target.
    if not eps <= target:
        raise AccountingError(
            f"calibrated noise_multiplier={sigma!r} gives ε={eps!r} above "
            f"target_epsilon={config.target_epsilon!r}"
        )
    return sigma
