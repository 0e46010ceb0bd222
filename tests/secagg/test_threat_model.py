"""The hardened threat model's arithmetic: C over the roster, the roster graph,
the declared-dropout bound D, and the parameters for_cohort builds from them."""

from __future__ import annotations

import itertools
import random
from collections import deque

import numpy as np
import pytest

from secagg import GraphParameterError, make_consortium
from secagg.threat import (
    assumed_corrupt,
    hardened_parameters,
    max_missing_neighbours,
    roster_graph,
)


def test_corrupt_count_is_over_the_roster_rounded_up_and_at_least_one() -> None:
    assert assumed_corrupt(0.2, 20) == 4  # 0.2·20 is 4.000000000000001 in floats
    assert assumed_corrupt(0.21, 20) == 5
    assert assumed_corrupt(0.05, 500) == 25
    assert assumed_corrupt(0.0, 500) == 1
    assert assumed_corrupt(0.001, 10) == 1


def _members(n: int) -> tuple[tuple[int, bytes], ...]:
    consortium, _ = make_consortium(range(100, 100 + 3 * n, 3))
    return consortium.members


def test_roster_graph_is_regular_symmetric_and_fixed_by_the_roster() -> None:
    members = _members(40)
    graph = roster_graph(members, 8)
    ids = [i for i, _ in members]
    assert graph.ids == tuple(ids)
    for u in ids:
        nb = graph.neighbours(u)
        assert len(nb) == 8 and u not in nb and nb <= set(ids)
        assert all(u in graph.neighbours(v) for v in nb)
        assert graph.closed(u) == nb | {u}
    # Nothing else enters: the same roster gives the same graph, another
    # roster (one identity key changed) a different one.
    again = roster_graph(tuple(members), 8)
    assert all(again.neighbours(u) == graph.neighbours(u) for u in ids)
    other = (*members[:-1], (members[-1][0], bytes(31) + b"\x01"))
    assert any(roster_graph(other, 8).neighbours(u) != graph.neighbours(u) for u in ids)
    with pytest.raises(GraphParameterError, match="client 7 is not on the roster"):
        graph.neighbours(7)


def _connected(nodes: set[int], adjacency: list[set[int]]) -> bool:
    if not nodes:
        return True
    start = next(iter(nodes))
    seen, todo = {start}, deque([start])
    while todo:
        u = todo.popleft()
        for v in adjacency[u] & nodes:
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return seen == nodes


def _ring(n: int, k: int) -> list[set[int]]:
    half = k // 2
    return [{(p + off) % n for off in range(-half, half + 1) if off} for p in range(n)]


def _worst_case(n: int, k: int, corrupt: int, allowed: int) -> bool:
    """Whether some placement of <= ``corrupt`` colluders and missing members,
    with every honest survivor seeing <= ``allowed`` missing neighbours,
    splits the honest survivors (exhaustive: every labelling of the ring)."""
    adjacency = _ring(n, k)
    for labels in itertools.product((0, 1, 2), repeat=n):  # 0 honest, 1 bad, 2 gone
        if labels.count(1) > corrupt:
            continue
        honest = {p for p in range(n) if labels[p] == 0}
        if any(sum(labels[q] == 2 for q in adjacency[p]) > allowed for p in honest):
            continue
        if not _connected(honest, adjacency):
            return True
    return False


@pytest.mark.parametrize(("n", "k"), [(10, 4), (11, 6)])
def test_the_dropout_bound_keeps_honest_survivors_connected(n: int, k: int) -> None:
    for corrupt in range(1, k):
        allowed = max_missing_neighbours(degree=k, corrupt=corrupt)
        if allowed < 0:
            continue
        # With D = floor((k - C - 1) / 2) no placement splits the survivors...
        assert not _worst_case(n, k, corrupt, allowed), (k, corrupt, allowed)
        # ...and one more tolerated dropout would let the colluders split them
        # (on a ring long enough for two windows and two k/2+1 segments).
        if n >= 2 * k + 2 and allowed + 1 <= k // 2:
            assert _worst_case(n, k, corrupt, allowed + 1), (k, corrupt)


PINNED = [
    # (N, α, δ) -> (k, t); N = cohort = roster, SecAgg+ from 100 members up.
    ((500, 0.0, 0.1), (32, 18)),
    ((500, 0.05, 0.1), (72, 50)),
    ((1000, 0.05, 0.1), (118, 85)),
    ((200, 0.05, 0.1), (42, 27)),
]


@pytest.mark.parametrize(("rates", "expected"), PINNED)
def test_hardened_parameters_hold_the_worst_case_rules(
    rates: tuple[int, float, float], expected: tuple[int, int]
) -> None:
    n, alpha, delta = rates
    found = hardened_parameters(
        roster_size=n,
        cohort=n,
        corrupt_fraction=alpha,
        dropout_fraction=delta,
        complete_below=100,
    )
    assert (found.degree, found.threshold) == expected
    k, t, c = found.degree, found.threshold, assumed_corrupt(alpha, n)
    allowed = max_missing_neighbours(degree=k, corrupt=c)
    assert 2 * t > k + 1 + c  # no split view
    assert c + 2 * allowed < k  # no segment carved out
    assert t <= k + 1 - allowed  # D missing still leaves t share holders


def test_honest_dropouts_rarely_exceed_the_bound() -> None:
    # Statistical check of the liveness side (2^-20 / N per neighbourhood):
    # 300 random 10 % dropout patterns over a 500-member roster never leave
    # a present client with more than D missing neighbours.
    members = _members(500)
    found = hardened_parameters(
        roster_size=500,
        cohort=500,
        corrupt_fraction=0.0,
        dropout_fraction=0.1,
        complete_below=100,
    )
    graph = roster_graph(members, found.degree)
    allowed = max_missing_neighbours(degree=found.degree, corrupt=1)
    ids = np.array(graph.ids)
    rng = random.Random(7)  # dropout schedule only, never key material
    worst = 0
    for _ in range(300):
        gone = set(rng.sample(list(ids), 50))
        for u in ids[:100]:
            if u not in gone:
                worst = max(worst, len(graph.neighbours(int(u)) & gone))
    assert worst <= allowed


def test_small_cohorts_get_a_complete_graph_or_a_named_refusal() -> None:
    found = hardened_parameters(
        roster_size=20,
        cohort=10,
        corrupt_fraction=0.2,
        dropout_fraction=0.0,
        complete_below=100,
    )
    assert (found.degree, found.threshold) == (0, 10)  # 2·10 > 10 + 4
    with pytest.raises(GraphParameterError, match=r"need 2t > 8 \+ 4 with t = 6"):
        hardened_parameters(
            roster_size=20,
            cohort=8,
            corrupt_fraction=0.2,
            dropout_fraction=0.25,
            complete_below=100,
        )
    with pytest.raises(GraphParameterError, match="cohort 30 must be between 1"):
        hardened_parameters(
            roster_size=20,
            cohort=30,
            corrupt_fraction=0.2,
            dropout_fraction=0.0,
            complete_below=100,
        )
