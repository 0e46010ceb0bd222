"""Replace-one accounting: pinned PLD values, slow oracles, and the lower bound.

The recorded ε (``Accountant.PLD``) is dp-accounting's pessimistic PLD; the
audit's independent recomputation is dp-accounting's optimistic PLD.  Both are
checked against values computed here from first principles: the Gaussian
mechanism's exact (ε, δ) curve, and a numerically integrated hockey-stick
divergence of one Poisson-subsampled Gaussian step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, special, stats

import dp

R1 = dp.Neighbouring.REPLACE_ONE
AR = dp.Neighbouring.ADD_REMOVE
PLD = dp.Accountant.PLD
DELTA = 1e-5

# (steps, relation) -> (recorded ε, independent lower bound) for σ=1.1, q=0.01,
# δ=1e-5, with dp-accounting 0.6.0.  The add/remove values sit 0.0008 and
# 0.004 above dp-accounting's default-grid (1e-4) values 1.51537 and 5.19262,
# the replace-one ones 0.0006 and 0.003 above 2.47780 and 9.42232.
PINNED = [
    (1000, R1, 2.478420, 2.427801),
    (10000, R1, 9.424939, 9.172298),
    (1000, AR, 1.516195, 1.465366),
    (10000, AR, 5.196251, 4.942587),
]


def _relation(rel: dp.Neighbouring) -> object:
    nr = dp_accounting.NeighboringRelation
    return nr.REPLACE_ONE if rel is R1 else nr.ADD_OR_REMOVE_ONE


def _dpsgd_event(q: float, sigma: float, steps: int) -> object:
    step = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    return dp_accounting.SelfComposedDpEvent(step, steps)


@pytest.mark.parametrize(("steps", "relation", "recorded", "lower"), PINNED)
def test_pinned_pld_values_and_the_accountant_behind_them(
    steps: int, relation: dp.Neighbouring, recorded: float, lower: float
) -> None:
    history = [dp.StepRun(1.1, 0.01, steps)]
    eps = dp.epsilon_for_history(history, DELTA, PLD, neighbouring=relation)
    low = dp.epsilon_lower_bound(history, DELTA, neighbouring=relation)
    assert eps == pytest.approx(recorded, abs=1e-5)
    assert low == pytest.approx(lower, abs=1e-5)
    assert low <= eps
    # Exactly dp-accounting's PLDAccountant on the same events and grid ...
    acct = PLDAccountant(
        neighboring_relation=_relation(relation), value_discretization_interval=1e-3
    )
    acct.compose(_dpsgd_event(0.01, 1.1, steps))
    assert eps == acct.get_epsilon(DELTA)
    # ... and never below (nor far above) its default, finer grid.
    fine = PLDAccountant(neighboring_relation=_relation(relation))
    fine.compose(_dpsgd_event(0.01, 1.1, steps))
    assert 0 <= eps - fine.get_epsilon(DELTA) < 5e-3


def test_replace_one_costs_more_than_add_remove_for_the_same_steps() -> None:
    history = [dp.StepRun(1.1, 0.01, 1000)]
    replace = dp.epsilon_for_history(history, DELTA, PLD, neighbouring=R1)
    add_remove = dp.epsilon_for_history(history, DELTA, PLD, neighbouring=AR)
    rdp = dp.epsilon_for_history(history, DELTA, dp.Accountant.RDP, neighbouring=AR)
    # Opacus's RDP bound is for add/remove: it is no bound under replace-one.
    assert add_remove < rdp < replace


def _gaussian_epsilon(mu: float, delta: float) -> float:
    """Exact ε of the Gaussian mechanism with μ = sensitivity / σ (Balle–Wang)."""

    def excess(eps: float) -> float:
        a = special.log_ndtr(-eps / mu + mu / 2)
        b = eps + special.log_ndtr(-eps / mu - mu / 2)
        return math.exp(a) - math.exp(b) - delta

    return float(optimize.brentq(excess, 0.0, 500.0, xtol=1e-12))


@pytest.mark.parametrize(("sigma", "steps"), [(1.0, 1), (2.0, 25), (5.0, 400)])
@pytest.mark.parametrize("relation", [R1, AR])
def test_unsampled_steps_match_the_exact_gaussian_curve(
    sigma: float, steps: int, relation: dp.Neighbouring
) -> None:
    # q = 1: `steps` Gaussian steps are one Gaussian with μ = √steps / σ per
    # unit of movement; replace-one moves a clipped gradient by up to 2C.
    history = [dp.StepRun(sigma, 1.0, steps)]
    shift = 2.0 if relation is R1 else 1.0
    exact = _gaussian_epsilon(shift * math.sqrt(steps) / sigma, DELTA)
    eps = dp.epsilon_for_history(history, DELTA, PLD, neighbouring=relation)
    low = dp.epsilon_lower_bound(history, DELTA, neighbouring=relation)
    assert low <= exact <= eps
    assert eps - exact < 2e-3


@pytest.mark.parametrize("releases", [1, 4])
@pytest.mark.parametrize("relation", [R1, AR])
def test_loss_releases_match_the_exact_gaussian_curve(
    releases: int, relation: dp.Neighbouring
) -> None:
    # A sum of values in [0, B] plus N(0, (σB)²): one record moves it by at
    # most B under either relation, so μ = √k / σ.
    history = [dp.StepRun(2.0, 1.0, releases, dp.Mechanism.GAUSSIAN_BOUNDED_SUM)]
    exact = _gaussian_epsilon(math.sqrt(releases) / 2.0, DELTA)
    eps = dp.epsilon_for_history(history, DELTA, PLD, neighbouring=relation)
    low = dp.epsilon_lower_bound(history, DELTA, neighbouring=relation)
    assert low <= exact <= eps
    assert eps - exact < 2e-3


def _hockey_stick(
    p: Callable[[float], float], q: Callable[[float], float], eps: float, scale: float
) -> float:
    """δ(ε) = ∫ max(0, p(x) − e^ε q(x)) dx, by adaptive quadrature."""

    def integrand(x: float) -> float:
        return max(0.0, p(x) - math.exp(eps) * q(x))

    value, _ = integrate.quad(
        integrand,
        -12 * scale - 2,
        12 * scale + 2,
        points=[-1.0, 0.0, 1.0],
        limit=500,
        epsabs=1e-14,
        epsrel=1e-10,
    )
    return float(value)


def _one_step_epsilon(q: float, sigma: float, relation: dp.Neighbouring) -> float:
    """ε of one Poisson-subsampled Gaussian step, from its worst-case pair.

    Replace-one: one example's clipped gradient moves from −C to +C, so the
    outputs are (1−q)·N(0, σ²) + q·N(∓1, σ²) (a symmetric pair).  Add/remove:
    (1−q)·N(0, σ²) + q·N(1, σ²) against N(0, σ²), in both directions.
    """

    def base(x: float) -> float:
        return float(stats.norm.pdf(x, 0, sigma))

    def mixture(shift: float) -> Callable[[float], float]:
        return lambda x: (1 - q) * base(x) + q * float(stats.norm.pdf(x, shift, sigma))

    def excess(eps: float) -> float:
        if relation is R1:
            delta = _hockey_stick(mixture(-1.0), mixture(1.0), eps, sigma)
        else:
            delta = max(
                _hockey_stick(mixture(1.0), base, eps, sigma),
                _hockey_stick(base, mixture(1.0), eps, sigma),
            )
        return delta - DELTA

    return float(optimize.brentq(excess, 0.0, 40.0, xtol=1e-9))


@pytest.mark.parametrize(("q", "sigma"), [(0.1, 0.8), (0.5, 1.0), (0.02, 0.6)])
@pytest.mark.parametrize("relation", [R1, AR])
def test_one_subsampled_step_matches_numerical_integration(
    q: float, sigma: float, relation: dp.Neighbouring
) -> None:
    exact = _one_step_epsilon(q, sigma, relation)
    history = [dp.StepRun(sigma, q, 1)]
    eps = dp.epsilon_for_history(history, DELTA, PLD, neighbouring=relation)
    low = dp.epsilon_lower_bound(history, DELTA, neighbouring=relation)
    assert low - 1e-6 <= exact <= eps + 1e-6
    assert eps - exact < 5e-3


@settings(max_examples=12, deadline=None)
@given(
    sigma=st.floats(0.6, 4.0),
    q=st.floats(0.005, 0.5),
    steps=st.integers(1, 400),
    releases=st.integers(0, 3),
    relation=st.sampled_from([R1, AR]),
)
def test_independent_recomputation_never_exceeds_the_recorded_epsilon(
    sigma: float, q: float, steps: int, releases: int, relation: dp.Neighbouring
) -> None:
    history = [dp.StepRun(sigma, q, steps)]
    if releases:
        history.append(
            dp.StepRun(3.0, 1.0, releases, dp.Mechanism.GAUSSIAN_BOUNDED_SUM)
        )
    eps = dp.epsilon_for_history(history, DELTA, PLD, neighbouring=relation)
    low = dp.epsilon_lower_bound(history, DELTA, neighbouring=relation)
    assert low <= eps
    # The lower bound's grid keeps its slack near 0.05 at these lengths.
    assert eps - low < 0.15


def test_opacus_accountants_are_refused_under_replace_one() -> None:
    history = [dp.StepRun(1.1, 0.01, 10)]
    for accountant in (dp.Accountant.RDP, dp.Accountant.PRV):
        with pytest.raises(dp.UnsupportedAccountantError) as info:
            dp.epsilon_for_history(history, DELTA, accountant, neighbouring=R1)
        assert str(info.value).startswith(
            f"accountant={accountant.name} cannot state ε under "
            "neighbouring=REPLACE_ONE: Opacus's RDP and PRV analyses of the "
            "Poisson-subsampled Gaussian are add/remove-one only; use "
            "accountant=PLD"
        )


def test_too_little_noise_is_an_accounting_error_not_a_huge_grid() -> None:
    with pytest.raises(
        dp.AccountingError, match="too little noise to account with PLD"
    ):
        dp.epsilon_for_history([dp.StepRun(0.15, 0.1, 10)], DELTA, PLD, neighbouring=R1)
    assert np.isfinite(
        dp.epsilon_for_history([dp.StepRun(0.25, 0.1, 10)], DELTA, PLD, neighbouring=R1)
    )
