"""ε by privacy loss distributions (dp-accounting's PLD), under either relation.

Two estimates of the same composition, from Google's ``dp-accounting``:

* :func:`pld_epsilon` — the accountant of record for ``Accountant.PLD``: the
  connect-the-dots construction with **pessimistic** rounding on a grid of
  :data:`PLD_INTERVAL`.  Its ε is a certified upper bound on the true ε of the
  composed mechanism (Doroshenko et al. 2022), and it is the same value that
  ``dp_accounting.pld.PLDAccountant(neighboring_relation=...,
  value_discretization_interval=PLD_INTERVAL)`` returns for the same events.
* :func:`pld_epsilon_lower` — the audit's independent recomputation: the
  privacy-buckets construction with **optimistic** rounding on a grid sized
  to the schedule (:func:`lower_interval`).  Its ε is a certified *lower*
  bound on the true ε, so for a correctly recorded ledger
  ``lower ≤ true ≤ recorded`` holds by construction, and a recorded ε below
  it is an under-report whatever the accountant that wrote it.

Mechanisms (see :class:`dp.accounting.Mechanism`) map to dp-accounting events:

* a DP-SGD run of ``steps`` Poisson-subsampled Gaussian steps with noise
  multiplier σ (per-example gradients clipped to norm C, noise σ·C) is
  ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), steps)``;
  under replace-one, dp-accounting compares the mixtures
  (1−q)·N(0, σ²) + q·N(∓1, σ²), the worst case of one example's clipped
  gradient moving anywhere within the ball of radius C;
* a bounded-sum release adds N(0, (σ·B)²) to a sum of per-example values
  clipped to [0, B].  One example moves the sum by at most B under either
  relation, so it is a Gaussian mechanism of sensitivity B: under add/remove
  ``GaussianDpEvent(σ)``; under replace-one dp-accounting's replace-one
  Gaussian treats a contribution of norm ≤ 1 as moving by up to 2, so the same
  mechanism is ``GaussianDpEvent(2σ)`` there.  ``k`` releases compose exactly
  into one Gaussian with σ/√k, as dp-accounting's accountant composes them;
  so do DP-SGD steps with q = 1.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Sequence
from typing import Any

from dp.errors import AccountingError, MissingDependencyError

__all__ = [
    "PLD_INTERVAL",
    "PLD_LOWER_INTERVAL",
    "dp_event",
    "lower_interval",
    "pld_epsilon",
    "pld_epsilon_lower",
]

#: Grid of the recorded (pessimistic) PLD estimate.  At 1e-3 the connect-the-dots
#: estimate is within 1e-4 of the 1e-4-grid value for DP-SGD schedules of up to
#: thousands of steps, at a tenth of the cost.
PLD_INTERVAL = 1e-3
#: Coarsest grid of the independent (optimistic) lower bound.  Its gap below
#: the true ε grows as (composed steps) × interval / 2, so the grid is refined
#: to keep that near :data:`LOWER_BOUND_SLACK`, down to
#: :data:`PLD_LOWER_FINEST_INTERVAL` (the cost grows as 1/interval).
PLD_LOWER_INTERVAL = 5e-4
PLD_LOWER_FINEST_INTERVAL = 5e-5
LOWER_BOUND_SLACK = 0.05

#: Largest (worst-case shift) / (noise std) of one piece accounted: the PLD
#: grid grows as its square, and beyond it one piece alone costs ε > 40.
MAX_SHIFT_OVER_STD = 10.0

#: Tail mass dp-accounting may truncate per self-composition.  The pessimistic
#: estimate sends it to the infinity bucket; the optimistic one may misplace up
#: to 2 × this much mass (truncation plus FFT wrap-around), so its ε is taken
#: at δ + 2·_TAIL per composed run, which keeps it a lower bound at δ.
_TAIL = 1e-15

#: One grouped run, as the accounting layer hands it over:
#: (mechanism value, noise multiplier, sample rate, count).
Run = tuple[str, float, float, int]

_DPSGD = "poisson_subsampled_gaussian"
_BOUNDED_SUM = "gaussian_bounded_sum"


def _dpa() -> Any:
    try:
        return importlib.import_module("dp_accounting")
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MissingDependencyError(
            "PLD accounting needs dp-accounting: pip install dp-accounting==0.6.0"
        ) from exc


def _relation(replace_one: bool) -> Any:
    rel = _dpa().NeighboringRelation
    return rel.REPLACE_ONE if replace_one else rel.ADD_OR_REMOVE_ONE


def dp_event(run: Run, *, replace_one: bool) -> Any:
    """The dp-accounting ``DpEvent`` of one grouped run (see the module text)."""
    dpa = _dpa()
    mechanism, sigma, q, count = run
    if mechanism == _DPSGD:
        step = dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))
        return dpa.SelfComposedDpEvent(step, count)
    if mechanism == _BOUNDED_SUM:
        scale = 2.0 if replace_one else 1.0
        return dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(scale * sigma), count)
    raise AccountingError(f"no PLD mapping for mechanism {mechanism!r}")


def _common(replace_one: bool, pessimistic: bool, interval: float) -> dict[str, Any]:
    return {
        "value_discretization_interval": interval,
        "pessimistic_estimate": pessimistic,
        # Connect-the-dots is pessimistic only; the optimistic bound uses the
        # privacy-buckets construction.
        "use_connect_dots": pessimistic,
        "neighboring_relation": _relation(replace_one),
    }


@functools.lru_cache(maxsize=256)
def _one_step(
    sigma: float, q: float, replace_one: bool, pessimistic: bool, interval: float
) -> Any:
    """PLD of one Poisson-subsampled Gaussian step (the costly part), cached."""
    pld = importlib.import_module("dp_accounting.pld.privacy_loss_distribution")
    return pld.from_gaussian_mechanism(
        sigma, sampling_prob=q, **_common(replace_one, pessimistic, interval)
    )


@functools.lru_cache(maxsize=512)
def _piece(run: Run, replace_one: bool, pessimistic: bool, interval: float) -> Any:
    """PLD of one grouped run; pure in its arguments, hence cached."""
    mechanism, sigma, q, count = run
    if mechanism not in (_DPSGD, _BOUNDED_SUM):
        raise AccountingError(f"no PLD mapping for mechanism {mechanism!r}")
    subsampled = mechanism == _DPSGD and q < 1
    # Without subsampling, k Gaussian releases are exactly one Gaussian with
    # σ/√k: no k-fold convolution needed.
    std = sigma if subsampled else sigma / math.sqrt(count)
    if mechanism == _BOUNDED_SUM and replace_one:
        std *= 2.0
    shift = 2.0 if replace_one else 1.0  # how far one record moves the output
    if shift / std > MAX_SHIFT_OVER_STD:
        raise AccountingError(
            f"too little noise to account with PLD: {count} release(s) of "
            f"{mechanism} at noise multiplier {sigma!r} move the output by "
            f"{shift / std:.3g} noise standard deviations (at most "
            f"{MAX_SHIFT_OVER_STD:g}, where ε already exceeds 40)"
        )
    if subsampled:
        one = _one_step(sigma, q, replace_one, pessimistic, interval)
        return one.self_compose(count, tail_mass_truncation=_TAIL)
    pld = importlib.import_module("dp_accounting.pld.privacy_loss_distribution")
    return pld.from_gaussian_mechanism(
        std, **_common(replace_one, pessimistic, interval)
    )


def _compose(
    runs: Sequence[Run], replace_one: bool, pessimistic: bool, interval: float
) -> Any:
    pld = importlib.import_module("dp_accounting.pld.privacy_loss_distribution")
    # Composed onto the identity, as dp-accounting's PLDAccountant does, so the
    # value is the accountant's to the last bit.
    out = pld.identity(
        value_discretization_interval=interval, pessimistic_estimate=pessimistic
    )
    for run in runs:
        out = out.compose(_piece(run, replace_one, pessimistic, interval))
    return out


def _epsilon(
    runs: tuple[Run, ...],
    delta: float,
    replace_one: bool,
    pessimistic: bool,
    interval: float,
) -> float:
    if not runs:
        return 0.0
    target = delta if pessimistic else delta + 2 * _TAIL * len(runs)
    try:
        composed = _compose(runs, replace_one, pessimistic, interval)
        eps = float(composed.get_epsilon_for_delta(target))
    except (ValueError, ArithmeticError, MemoryError) as exc:
        raise AccountingError(
            f"PLD accountant could not compute ε for {len(runs)} run(s) at "
            f"δ={delta!r}: {exc}"
        ) from exc
    if math.isnan(eps) or eps < 0:
        raise AccountingError(f"PLD accountant returned ε={eps!r}")
    return eps


@functools.lru_cache(maxsize=4096)
def pld_epsilon(runs: tuple[Run, ...], delta: float, *, replace_one: bool) -> float:
    """Certified upper bound on ε (pessimistic PLD on :data:`PLD_INTERVAL`).

    ``runs`` must be grouped (one item per distinct mechanism, σ and q); the
    result is cached by its arguments.  ``math.inf`` when no finite ε exists.
    """
    return _epsilon(runs, delta, replace_one, True, PLD_INTERVAL)


@functools.lru_cache(maxsize=4096)
def pld_epsilon_lower(
    runs: tuple[Run, ...], delta: float, *, replace_one: bool
) -> float:
    """Certified lower bound on ε (optimistic PLD, see :func:`lower_interval`)."""
    return _epsilon(runs, delta, replace_one, False, lower_interval(runs))


def lower_interval(runs: Sequence[Run]) -> float:
    """The lower bound's grid: slack ≈ LOWER_BOUND_SLACK where affordable."""
    steps = sum(count for mechanism, _, _, count in runs if mechanism == _DPSGD)
    fine = 2 * LOWER_BOUND_SLACK / max(steps, 1)
    return max(PLD_LOWER_FINEST_INTERVAL, min(PLD_LOWER_INTERVAL, fine))
