"""The hardened threat model: a malicious coordinator colluding with members.

Who is assumed what.  The consortium roster (:class:`~secagg.identity.
Consortium`, N members, distributed out of band) is honest; the coordinator
may deviate arbitrarily and colludes with at most ``C = max(1, ⌈α·N⌉)``
members, α being each client's ``ClientPolicy.assumed_corrupt_fraction``.
C is taken over the roster, never over the cohort the coordinator announces
(which it chooses), and is at least 1: the hardened mode exists for a
coordinator that has members on its side.

What each hardened client enforces (the malicious variant of Bell et al.,
CCS 2020, with worst-case instead of statistical corruption counts):

1. **Neighbourhoods the coordinator cannot steer.**  On the complete graph a
   client's neighbours are the whole cohort.  In SecAgg+ they come from a
   Harary graph H(N, k) over the *roster*, relabelled by a permutation keyed
   by the roster alone (:class:`RosterGraph`).  Members that are absent or
   drop stay vertices, so which advertisers the coordinator lists, which
   model or context it announces, and how often it restarts change nobody's
   neighbours.
2. **Thresholds that hold against every colluder at once.**  A share holder
   group (the cohort n, or a closed neighbourhood of k + 1) must satisfy
   ``2t > group + C``: honest holders reveal one kind of share per peer, so
   no peer's seed *and* mask key can both reach t shares, even if all C
   colluders sit in that one neighbourhood.  The cohort must hold at least
   ``C + min_honest`` members, so the sum always mixes honest inputs.
3. **Neighbourhood signatures.**  Before revealing a share of peer u, a
   client needs t signatures on the survivor list it signed from u's closed
   neighbourhood; with 2t > k + 1 + C only one list can gather them, so every
   honest holder treats u the same way (alive or dropped).
4. **A bound on declared dropouts, checked where it can be.**  In SecAgg+ a
   client refuses when more than ``D = ⌊(k - C - 1) / 2⌋`` of its k
   neighbours are missing (absent, silent or declared dropped).  Cutting a
   Harary ring takes two windows of k/2 consecutive bad positions; the honest
   survivor next to each window sees at most D of it missing, so the
   colluders would need ``k - 2D > C`` members there.  The honest survivors
   therefore stay one connected piece and only their total is learnt, never
   the sum of a segment the coordinator carved out ("ghost survivors").
5. **One contribution per model, one advert per session nonce**, in a
   durable log (:mod:`secagg.participation`): no differencing of two sessions
   on the same model, no replay of an advert into another session.

The guarantee reached: a coordinator colluding with at most C members learns,
per model, the sum of the inputs (weights and clipped counts included) of
one set of honest survivors it cannot make smaller than ``t - C`` and cannot
split; nothing else about an individual honest input.  Privacy does not rest
on the graph's randomness (the counts above are worst case), only liveness
does: the random relabelling spreads honest dropouts over neighbourhoods.

>>> assumed_corrupt(0.2, 20), assumed_corrupt(0.0, 500)
(4, 1)
>>> max_missing_neighbours(degree=32, corrupt=1)
15
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from secagg import graph as graph_params
from secagg.errors import GraphParameterError

__all__ = [
    "ROSTER_GRAPH_LABEL",
    "HardenedParams",
    "RosterGraph",
    "assumed_corrupt",
    "hardened_parameters",
    "max_missing_neighbours",
    "roster_graph",
]

#: Hash label of the roster graph's relabelling seed; nothing else uses it.
ROSTER_GRAPH_LABEL = b"fedshield/secagg/v1/roster-graph"
# Keeps ceil(α·N) exact when α·N is an integer that binary floating point
# represents a hair high (0.2·20 = 4.000000000000001).
_EPS = 1e-9
# Honest dropouts must exceed a neighbourhood's allowance with probability
# below 2^-20 / N (a union bound over the roster keeps the session live).
_CORRECTNESS_BITS = 20.0


def assumed_corrupt(corrupt_fraction: float, roster_size: int) -> int:
    """C = max(1, ⌈α·N⌉): members assumed to collude with the coordinator."""
    return max(1, math.ceil(corrupt_fraction * roster_size - _EPS))


def max_missing_neighbours(*, degree: int, corrupt: int) -> int:
    """D = ⌊(k - C - 1) / 2⌋, the most missing neighbours a SecAgg+ client
    tolerates; -1 when the degree cannot keep honest survivors connected."""
    return (degree - corrupt - 1) // 2


@dataclass(frozen=True, slots=True)
class RosterGraph:
    """SecAgg+ neighbourhoods over the whole roster, fixed by the roster.

    Positions 0..N-1 of a Harary graph H(N, k) are relabelled by a uniform
    permutation keyed by SHA-256 over the roster (ids and identity keys), and
    mapped onto roster ids.  Nothing the coordinator sends enters it.
    """

    ids: tuple[int, ...]
    degree: int
    #: Roster ids in ring order: position p is linked to p ± 1 .. p ± k/2.
    ring: tuple[int, ...]
    _adjacency: tuple[frozenset[int], ...]

    def neighbours(self, client: int) -> frozenset[int]:
        """Roster ids adjacent to ``client`` (itself excluded)."""
        return self._adjacency[self._position(client)]

    def closed(self, client: int) -> frozenset[int]:
        """``client`` and its neighbours: the holders of its shares."""
        return self.neighbours(client) | {client}

    def two_hops(self, client: int) -> frozenset[int]:
        """The share holders of ``client``'s neighbours: whose survivor-list
        signatures ``client`` counts before it unmasks."""
        return frozenset().union(*(self.closed(u) for u in self.closed(client)))

    def _position(self, client: int) -> int:
        import bisect

        pos = bisect.bisect_left(self.ids, client)
        if pos == len(self.ids) or self.ids[pos] != client:
            raise GraphParameterError(f"client {client} is not on the roster")
        return pos


def _roster_seed(members: Sequence[tuple[int, bytes]]) -> bytes:
    h = hashlib.sha256(ROSTER_GRAPH_LABEL)
    for cid, key in members:
        h.update(struct.pack("<I", cid) + key)
    return h.digest()


@functools.lru_cache(maxsize=8)
def _build(members: tuple[tuple[int, bytes], ...], degree: int) -> RosterGraph:
    ids = tuple(i for i, _ in members)
    seed = _roster_seed(members)
    positions = graph_params.harary_graph(len(ids), degree, seed)
    adjacency = tuple(frozenset(ids[p] for p in nb) for nb in positions)
    # The same relabelling harary_graph applies: ring position -> position.
    ring = tuple(ids[p] for p in graph_params._permutation(len(ids), seed))
    return RosterGraph(ids=ids, degree=degree, ring=ring, _adjacency=adjacency)


def roster_graph(members: tuple[tuple[int, bytes], ...], degree: int) -> RosterGraph:
    """The graph of a roster given as sorted ``(id, identity key)`` pairs."""
    return _build(members, degree)


@dataclass(frozen=True, slots=True)
class HardenedParams:
    """Graph and threshold of a hardened session (degree 0: complete graph)."""

    degree: int
    threshold: int


def _complete(cohort: int, corrupt: int, dropout_fraction: float) -> HardenedParams:
    threshold = math.ceil((1.0 - dropout_fraction - _EPS) * cohort)
    if cohort < corrupt + 2:
        raise GraphParameterError(
            f"a hardened cohort needs at least {corrupt + 2} members ({corrupt} "
            f"assumed colluders + 2 honest), got {cohort}"
        )
    if 2 * threshold <= cohort + corrupt:
        raise GraphParameterError(
            f"no hardened threshold for a complete graph of {cohort} with "
            f"{corrupt} assumed colluders and dropout {dropout_fraction}: need "
            f"2t > {cohort} + {corrupt} with t = {threshold} survivors"
        )
    return HardenedParams(degree=0, threshold=threshold)


def hardened_parameters(
    *,
    roster_size: int,
    cohort: int,
    corrupt_fraction: float,
    dropout_fraction: float,
    complete_below: int,
) -> HardenedParams:
    """(k, t) a hardened client accepts and honest dropouts rarely break.

    Cohorts below ``complete_below`` get the complete graph with
    t = ⌈(1-δ)n⌉ and 2t > n + C.  Larger ones get the smallest even k with
    t = ⌊(k + 1 + C) / 2⌋ + 1 such that the missing neighbours of a present
    client (absent roster members plus δ of the cohort, hypergeometric)
    exceed D = ⌊(k - C - 1) / 2⌋ or k + 1 - t with probability below
    2^-20 / N.  Falls back to the complete graph when no k < N - 1 works.
    """
    if not 1 <= cohort <= roster_size:
        raise GraphParameterError(
            f"cohort {cohort} must be between 1 and the roster size {roster_size}"
        )
    if not 0.0 <= corrupt_fraction < 1.0 or not 0.0 <= dropout_fraction < 1.0:
        raise GraphParameterError("corrupt and dropout fractions must be in [0, 1)")
    corrupt = assumed_corrupt(corrupt_fraction, roster_size)
    if cohort < complete_below:
        return _complete(cohort, corrupt, dropout_fraction)
    present = math.ceil((1.0 - dropout_fraction - _EPS) * cohort)
    missing = roster_size - present
    q = 2.0**-_CORRECTNESS_BITS / roster_size
    for k in range(2, roster_size - 1, 2):
        allowed = max_missing_neighbours(degree=k, corrupt=corrupt)
        threshold = (k + 1 + corrupt) // 2 + 1
        if allowed < 0 or threshold > k + 1:
            continue
        pmf = graph_params._hypergeom_pmf(roster_size - 1, missing, k)
        worst = graph_params._upper_quantile(pmf, q)
        if worst <= allowed and threshold <= k + 1 - worst:
            return HardenedParams(degree=k, threshold=threshold)
    return _complete(cohort, corrupt, dropout_fraction)
