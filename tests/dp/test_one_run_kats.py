"""One-run audit maths: known answers and the guessing rule."""

from __future__ import annotations

import pytest

from dp.errors import InvalidAuditInputError
from dp.one_run import audit_scores, epsilon_lower_bound, p_value

# (m, r, v, δ) → ε_LB at 95 % confidence; the same values as the auditing
# module of jax_privacy 2.0.0 computes.
KATS = [
    (1000, 100, 80, 0.0, 0.958),
    (1000, 100, 80, 1e-5, 0.955),
    (1000, 100, 95, 1e-5, 2.165),
    (1000, 500, 400, 1e-5, 1.198),
    (10000, 1000, 800, 1e-5, 1.251),
    (1000, 100, 55, 1e-5, 0.0),
]

# All r guesses correct, δ=1e-5: the most a one-run audit can certify.
CEILINGS = [
    (100, 20, 1.82),
    (1000, 100, 3.47),
    (1000, 500, 5.09),
    (10_000, 1000, 5.53),
    (10_000, 5000, 7.14),
    (100_000, 10_000, 5.82),
]


@pytest.mark.parametrize(("m", "r", "v", "delta", "expected"), KATS)
def test_known_answers(m: int, r: int, v: int, delta: float, expected: float) -> None:
    assert round(epsilon_lower_bound(m=m, r=r, v=v, delta=delta), 3) == expected


@pytest.mark.parametrize(("m", "r", "expected"), CEILINGS)
def test_ceilings(m: int, r: int, expected: float) -> None:
    assert round(epsilon_lower_bound(m=m, r=r, v=r, delta=1e-5), 2) == expected


def test_p_value_is_increasing_and_the_bound_sits_on_the_significance() -> None:
    ps = [p_value(e / 10, m=1000, r=100, v=80, delta=1e-5) for e in range(40)]
    assert ps == sorted(ps)
    eps = epsilon_lower_bound(m=1000, r=100, v=80, delta=1e-5)
    assert p_value(eps, m=1000, r=100, v=80, delta=1e-5) < 0.05
    assert p_value(eps + 1e-5, m=1000, r=100, v=80, delta=1e-5) >= 0.05


@pytest.mark.parametrize(
    "kwargs",
    [
        {"m": 10, "r": 20, "v": 5, "delta": 0.0},
        {"m": 10, "r": 5, "v": 6, "delta": 0.0},
        {"m": 10, "r": 0, "v": 0, "delta": 0.0},
        {"m": 10, "r": 5, "v": 5, "delta": 1.0},
    ],
)
def test_bad_counts_are_refused(kwargs: dict[str, int | float]) -> None:
    with pytest.raises(InvalidAuditInputError, match="need"):
        epsilon_lower_bound(**kwargs)  # type: ignore[arg-type]


def test_audit_scores_guesses_top_and_bottom_with_bonferroni() -> None:
    m = 200
    included = [i % 2 == 0 for i in range(m)]
    # Perfect separation: every guess is right.
    scores = [1.0 + i if inc else -1.0 - i for i, inc in enumerate(included)]
    best = audit_scores(scores, included, delta=1e-5, ks=(10, 50))
    assert (best.k, best.r, best.v) == (50, 100, 100)
    # Bonferroni: the bound is the one at significance 0.05 / 2.
    expected = epsilon_lower_bound(m=m, r=100, v=100, delta=1e-5, significance=0.025)
    assert best.epsilon_lower_bound == expected
    assert expected < epsilon_lower_bound(m=m, r=100, v=100, delta=1e-5)
    # Scores that carry no information give no bound.
    flat = audit_scores([0.0] * m, included, delta=1e-5, ks=(10, 50))
    assert flat.epsilon_lower_bound == 0.0
    # Inverted scores: all guesses wrong.
    inverted = audit_scores([-s for s in scores], included, delta=1e-5, ks=(50,))
    assert inverted.v == 0 and inverted.epsilon_lower_bound == 0.0


def test_audit_scores_refuses_mismatched_input() -> None:
    with pytest.raises(InvalidAuditInputError, match="as many inclusion bits"):
        audit_scores([1.0, 2.0], [True], delta=0.0)
    with pytest.raises(InvalidAuditInputError, match="no k in"):
        audit_scores([1.0] * 10, [True] * 10, delta=0.0, ks=(10,))
