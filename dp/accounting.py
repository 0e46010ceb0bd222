"""Pure privacy-accounting functions: schedules and ε from a history.

The unit of accounting is a :class:`StepRun`: ``steps`` consecutive releases
of one :class:`Mechanism` with the same noise multiplier σ and sample rate q.
A client's privacy loss is the composition of every run it executed, over all
rounds it joined, under the neighbouring relation its configuration states
(:class:`~dp.config.Neighbouring`).  Composition does not depend on order, so
runs are grouped by (mechanism, σ, q) before an accountant sees them; ε of a
grouped history is cached.

No function here keeps state: each builds a fresh accountant (dp-accounting's
PLD, see :mod:`dp.pld`, or Opacus's RDP/PRV, imported only when used), so a
caller's accountant is never mutated behind its back.

>>> round(epsilon_for_history([StepRun(1.1, 0.01, 1000)], 1e-5, Accountant.RDP,
...                           neighbouring=Neighbouring.ADD_REMOVE), 5)
1.71177
"""

from __future__ import annotations

import enum
import functools
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dp.config import (
    Accountant,
    DPConfig,
    Neighbouring,
    check_accountant_supports,
    check_noise_multiplier,
)
from dp.errors import AccountingError, DPConfigError, InvalidDeltaError
from dp.pld import pld_epsilon, pld_epsilon_lower

__all__ = [
    "Mechanism",
    "StepRun",
    "epsilon_for_history",
    "epsilon_lower_bound",
    "group_runs",
    "loss_release_run",
    "merge_runs",
    "round_runs",
    "sample_rate_for",
    "steps_per_epoch",
    "steps_per_round",
]

#: Opacus PRV's default discretisation error; its ε is an upper bound that is at
#: most about ``2 * PRV_EPS_ERROR`` above the true ε (Gopi et al. 2021).
PRV_EPS_ERROR = 0.01


class Mechanism(enum.Enum):
    """What one ledger entry (one :class:`StepRun`) charges for.

    * ``POISSON_SUBSAMPLED_GAUSSIAN``: DP-SGD steps; per-example gradients
      clipped to norm C, Poisson sample rate q, noise N(0, (σ·C)²).
    * ``GAUSSIAN_BOUNDED_SUM``: one release of a sum of per-example values
      clipped to [0, B] plus N(0, (σ·B)²) (the DP-released training loss);
      its sample rate is 1.
    """

    POISSON_SUBSAMPLED_GAUSSIAN = "poisson_subsampled_gaussian"
    GAUSSIAN_BOUNDED_SUM = "gaussian_bounded_sum"


@dataclass(frozen=True, slots=True)
class StepRun:
    """``steps`` releases of ``mechanism`` with noise multiplier σ and rate q."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    mechanism: Mechanism = Mechanism.POISSON_SUBSAMPLED_GAUSSIAN

    def __post_init__(self) -> None:
        check_noise_multiplier(self.noise_multiplier)
        q = self.sample_rate
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 1:
            raise DPConfigError(f"sample_rate must be in (0, 1]; found {q!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int):
            raise DPConfigError(f"steps must be an integer >= 1; found {self.steps!r}")
        if self.steps < 1:
            raise DPConfigError(f"steps must be an integer >= 1; found {self.steps!r}")
        if not isinstance(self.mechanism, Mechanism):
            raise DPConfigError(
                f"mechanism must be a Mechanism; found {self.mechanism!r}"
            )
        if self.mechanism is Mechanism.GAUSSIAN_BOUNDED_SUM and q != 1:
            raise DPConfigError(
                f"a GAUSSIAN_BOUNDED_SUM release has sample_rate 1; found {q!r}"
            )


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


def loss_release_run(config: DPConfig, releases: int = 1) -> StepRun | None:
    """The charge for ``releases`` DP loss releases, or None when not configured."""
    if not config.release_loss or config.loss_noise_multiplier is None:
        return None
    return StepRun(
        config.loss_noise_multiplier, 1.0, releases, Mechanism.GAUSSIAN_BOUNDED_SUM
    )


def round_runs(
    config: DPConfig, noise_multiplier: float, num_examples: int
) -> list[StepRun]:
    """Every charge one round makes, in ledger order: DP-SGD, then the loss."""
    runs = [
        StepRun(
            noise_multiplier,
            sample_rate_for(num_examples, config.batch_size),
            steps_per_round(config, num_examples),
        )
    ]
    loss = loss_release_run(config)
    return runs if loss is None else [*runs, loss]


def merge_runs(runs: Iterable[StepRun]) -> list[StepRun]:
    """Merge *consecutive* runs with identical (mechanism, σ, q), as Opacus does."""
    merged: list[StepRun] = []
    for run in runs:
        if merged and _key(merged[-1]) == _key(run):
            last = merged.pop()
            run = StepRun(
                run.noise_multiplier,
                run.sample_rate,
                last.steps + run.steps,
                run.mechanism,
            )
        merged.append(run)
    return merged


def _key(run: StepRun) -> tuple[Mechanism, float, float]:
    return (run.mechanism, run.noise_multiplier, run.sample_rate)


def group_runs(history: Iterable[StepRun]) -> tuple[StepRun, ...]:
    """One run per distinct (mechanism, σ, q), steps summed, in first-seen order.

    Composition is commutative, so the grouped history has the same ε.
    """
    counts: dict[tuple[Mechanism, float, float], int] = {}
    for run in history:
        if not isinstance(run, StepRun):
            raise DPConfigError(f"a history holds StepRun items; found {run!r}")
        counts[_key(run)] = counts.get(_key(run), 0) + run.steps
    return tuple(StepRun(s, q, k, m) for (m, s, q), k in counts.items())


def _pld_runs(runs: Sequence[StepRun]) -> tuple[tuple[str, float, float, int], ...]:
    return tuple(
        (r.mechanism.value, r.noise_multiplier, r.sample_rate, r.steps) for r in runs
    )


@functools.lru_cache(maxsize=1024)
def _rdp_per_step(sigma: float, q: float) -> Any:
    """Opacus's RDP curve of one step at its default orders (cached)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as analysis

    return analysis.compute_rdp(
        q=q, noise_multiplier=sigma, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS
    )


def _rdp_epsilon(runs: tuple[StepRun, ...], delta: float) -> float:
    """Exactly ``RDPAccountant.get_epsilon`` for ``runs``, one curve per (σ, q).

    Opacus computes ``compute_rdp(steps=k) = curve × k`` and sums over the
    history, so scaling a cached one-step curve gives the same floats.
    """
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as analysis

    rdp = sum(_rdp_per_step(r.noise_multiplier, r.sample_rate) * r.steps for r in runs)
    eps, _ = analysis.get_privacy_spent(
        orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta
    )
    return float(eps)


@functools.lru_cache(maxsize=4096)
def _opacus_epsilon(
    runs: tuple[StepRun, ...], delta: float, accountant: Accountant
) -> float:
    # A bounded-sum release is the Gaussian mechanism: Opacus's q = 1 case.
    try:
        with warnings.catch_warnings():
            # RDP warns when the optimal order sits at the edge of its grid; the
            # value is still a valid (looser) upper bound, so it is not an error.
            warnings.simplefilter("ignore", UserWarning)
            if accountant is Accountant.RDP:
                return _rdp_epsilon(runs, delta)
            from opacus.accountants import PRVAccountant

            acct = PRVAccountant()
            acct.history = [(r.noise_multiplier, r.sample_rate, r.steps) for r in runs]
            return float(acct.get_epsilon(delta=delta))
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise AccountingError(
            f"{accountant.name} accountant could not compute ε for {len(runs)} "
            f"run(s) at δ={delta!r}: {exc}"
        ) from exc


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        raise InvalidDeltaError(f"delta must be a real number; found {delta!r}")
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise InvalidDeltaError(f"delta must be in (0, 1); found {delta!r}")


def epsilon_for_history(
    history: Sequence[StepRun],
    delta: float,
    accountant: Accountant,
    *,
    neighbouring: Neighbouring,
) -> float:
    """ε after composing ``history`` at ``delta`` under ``neighbouring``.

    An empty history costs nothing (ε = 0).  Raises
    :class:`~dp.errors.UnsupportedAccountantError` for an accountant that
    cannot state ε under the relation, and :class:`AccountingError` when the
    accountant cannot produce a finite ε (Opacus's PRV fails to discretise its
    grid at very large ε, for one).
    """
    check_accountant_supports(accountant, neighbouring)
    _check_delta(delta)
    runs = group_runs(history)
    if not runs:
        return 0.0
    if accountant is Accountant.PLD:
        eps = pld_epsilon(
            _pld_runs(runs),
            float(delta),
            replace_one=neighbouring is Neighbouring.REPLACE_ONE,
        )
    else:
        eps = _opacus_epsilon(runs, float(delta), accountant)
    if not math.isfinite(eps) or eps < 0:
        raise AccountingError(
            f"{accountant.name} accountant returned ε={eps!r} for {len(runs)} run(s)"
        )
    return eps


def epsilon_lower_bound(
    history: Sequence[StepRun], delta: float, *, neighbouring: Neighbouring
) -> float:
    """A certified *lower* bound on the true ε of ``history`` (optimistic PLD).

    Any valid accountant's ε is at least this; the audit uses it as its
    independent recomputation.
    """
    _check_delta(delta)
    runs = group_runs(history)
    return pld_epsilon_lower(
        _pld_runs(runs),
        float(delta),
        replace_one=neighbouring is Neighbouring.REPLACE_ONE,
    )
