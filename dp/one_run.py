"""One-run privacy auditing maths (Steinke, Nasr, Jagielski 2023, arXiv 2305.08846).

Pure functions, no training.  m canaries are each included with probability
1/2 (bit Sᵢ = ±1); after one training run an auditor guesses +1 for the
highest-scoring k canaries and −1 for the lowest-scoring k, abstaining on the
rest: r = 2k guesses, v of them correct.  If training is (ε, δ)-DP, v is
stochastically dominated as in the paper's Theorem 3, which gives the p-value

    β(ε) = P[Binomial(r, e^ε/(1+e^ε)) ≥ v]
    α(ε) = max_{i=1..v} P[v − i ≤ Binomial(r, e^ε/(1+e^ε)) < v] / i
    p(ε) = min(1, β(ε) + 2·m·δ·α(ε)),

and ε_LB = sup{ε ≥ 0 : p(ε) < significance} (0 if p(0) already fails).  When
the auditor tries several k after seeing the scores, each test runs at
``significance / len(ks)`` (Bonferroni), so the reported bound keeps its
confidence.

>>> round(epsilon_lower_bound(m=1000, r=100, v=80, delta=0.0), 3)
0.958
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

from dp.errors import InvalidAuditInputError

__all__ = ["OneRunBound", "audit_scores", "epsilon_lower_bound", "p_value"]

_EPS_CAP = 100.0


def p_value(epsilon: float, *, m: int, r: int, v: int, delta: float) -> float:
    """p-value of observing ≥ v correct of r guesses under (ε, δ)-DP."""
    if v <= 0:
        return 1.0
    q = 1.0 / (1.0 + math.exp(-epsilon))  # e^ε/(1+e^ε), overflow-safe
    beta = float(binom.sf(v - 1, r, q))
    if delta == 0:
        return min(1.0, beta)
    # F(k) = P[X <= k] for k = -1 .. v-1, with F(-1) = 0.
    cdf = np.concatenate([[0.0], binom.cdf(np.arange(v), r, q)])
    i = np.arange(1, v + 1)
    window = cdf[v] - cdf[v - i]  # P[v - i <= X < v]
    alpha = float(np.max(window / i))
    return min(1.0, beta + 2.0 * m * delta * alpha)


def epsilon_lower_bound(
    *, m: int, r: int, v: int, delta: float, significance: float = 0.05
) -> float:
    """Largest ε the observation (m, r, v) rejects at ``significance``."""
    if not (0 < r <= m and 0 <= v <= r):
        raise InvalidAuditInputError(
            f"need 0 < r <= m and 0 <= v <= r; found m={m}, r={r}, v={v}"
        )
    if not (0 <= delta < 1 and 0 < significance < 1):
        raise InvalidAuditInputError(
            f"need 0 <= delta < 1 and 0 < significance < 1; found {delta}, "
            f"{significance}"
        )
    if p_value(0.0, m=m, r=r, v=v, delta=delta) >= significance:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(hi, m=m, r=r, v=v, delta=delta) < significance:
        lo, hi = hi, 2 * hi
        if hi > _EPS_CAP:
            return _EPS_CAP
    # p(ε) is increasing: bisect the boundary to 1e-6.
    while hi - lo > 1e-6:
        mid = (lo + hi) / 2
        if p_value(mid, m=m, r=r, v=v, delta=delta) < significance:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True, slots=True, kw_only=True)
class OneRunBound:
    """The best Bonferroni-corrected bound over the tried guess counts."""

    m: int
    k: int
    r: int
    v: int
    delta: float
    significance: float
    epsilon_lower_bound: float


def audit_scores(
    scores: Sequence[float],
    included: Sequence[bool],
    *,
    delta: float,
    significance: float = 0.05,
    ks: Sequence[int] = (10, 25, 50, 100, 250),
) -> OneRunBound:
    """ε lower bound from canary scores (higher = "more likely included").

    For each k in ``ks`` guess +1 for the top k and −1 for the bottom k, test at
    ``significance / len(ks)``, and keep the largest bound.  Ties are broken by
    canary index, which is fixed before the inclusion bits are drawn.
    """
    m = len(scores)
    if m != len(included) or m == 0:
        raise InvalidAuditInputError(
            f"need as many inclusion bits as scores (> 0); {m}, {len(included)}"
        )
    usable = [k for k in ks if 0 < 2 * k <= m]
    if not usable:
        raise InvalidAuditInputError(f"no k in {tuple(ks)} fits 2k <= m={m}")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    truth = np.asarray(included, dtype=bool)
    level = significance / len(usable)
    bounds = []
    for k in usable:
        v = int(truth[order[:k]].sum() + (~truth[order[m - k :]]).sum())
        eps = epsilon_lower_bound(m=m, r=2 * k, v=v, delta=delta, significance=level)
        bounds.append(
            OneRunBound(
                m=m,
                k=k,
                r=2 * k,
                v=v,
                delta=delta,
                significance=significance,
                epsilon_lower_bound=eps,
            )
        )
    return max(bounds, key=lambda b: b.epsilon_lower_bound)
