"""Client sampling: cohort size, determinism, resumable state."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core import ClientSampler, cohort_size


@given(
    available=st.integers(0, 500),
    fraction=st.floats(0.001, 1.0),
    minimum=st.integers(1, 50),
)
def test_cohort_size_is_the_documented_formula(
    available: int, fraction: float, minimum: int
) -> None:
    size = cohort_size(available, fraction, minimum)
    assert size == min(available, max(minimum, round(fraction * available)))


def test_sampler_is_seeded_resumable_and_draws_without_replacement() -> None:
    a = ClientSampler(fraction=0.3, min_clients=2, seed=5)
    b = ClientSampler(fraction=0.3, min_clients=2, seed=5)
    pool = range(0, 40, 2)
    draws = [a.sample(pool) for _ in range(3)]
    assert draws == [b.sample(pool) for _ in range(3)]
    assert all(len(set(d)) == len(d) == 6 and set(d) <= set(pool) for d in draws)
    assert len(set(draws)) > 1, "every round drew the same cohort"
    saved = a.state_dict()
    nxt = a.sample(pool)
    c = ClientSampler(fraction=0.3, min_clients=2, seed=0)
    c.load_state_dict(saved)
    assert c.sample(pool) == nxt
    assert ClientSampler(fraction=0.1, min_clients=5, seed=1).sample([3, 1]) == (1, 3)
