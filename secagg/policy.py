"""What a client accepts, whatever the server announces.

A :class:`ClientPolicy` is the client's own view of a safe session: the
smallest and largest cohort it joins, the smallest threshold, the largest
weight cap, the share of clients it assumes collude with the server, and how
many of the announced cohort may go missing.  :meth:`ClientPolicy.check` runs
before a client makes any key; :meth:`ClientPolicy.check_dropouts` (and, in a
hardened SecAgg+ session, :meth:`ClientPolicy.check_neighbourhood`) whenever
a list of present clients arrives.

In hardened mode the colluders are counted over the consortium roster of N
members, ``C = max(1, ⌈α·N⌉)`` (:mod:`secagg.threat`), never over the cohort
the server announces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from secagg import graph as graph_params
from secagg import threat
from secagg.config import GraphKind, SecAggConfig, SecurityMode, threat_model
from secagg.errors import ConfigError, PolicyViolation

__all__ = ["ClientPolicy"]

# Keeps ceil/floor of fraction·n conservative when fraction·n is an integer
# that binary floating point represents a hair off (0.2·5).
_EPS = 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientPolicy:
    """What a client accepts, independent of what the server announces.

    Args:
        min_cohort: smallest ``num_clients`` the client joins.
        min_threshold: smallest absolute threshold accepted.
        min_threshold_fraction: on the complete graph, the threshold must be
            at least this share of the cohort.  On a SecAgg+ (Harary) graph
            the client instead recomputes the smallest secure threshold for
            the announced (n, degree) and its ``assumed_corrupt_fraction``
            (:func:`secagg.graph.minimum_threshold`), the bound
            :meth:`SecAggConfig.for_cohort` itself builds to.
        max_weight_cap: largest ``max_weight`` the client accepts.
        assumed_corrupt_fraction: α, share of clients assumed to collude with
            the server.  In hardened mode the client counts C = max(1,
            ⌈α·N⌉) colluders over the roster of N members and demands
            2t > g + C (g the share holders of one secret: the cohort, or a
            closed SecAgg+ neighbourhood), so no peer's seed and mask key can
            both reach t shares and at most one survivor list can gather t
            signatures among any peer's share holders.
        max_dropout_fraction: largest share of the announced cohort that may
            be missing from the survivor list (or the key directory) before
            this client refuses to go on.
        mode: the only :class:`SecurityMode` this client joins; ``None``
            accepts either (the client's credentials still must fit it).
        min_honest: hardened mode: the cohort must hold at least C +
            ``min_honest`` members and t - C >= ``min_honest``, so every sum
            mixes that many honest inputs.
        max_cohort: largest announced cohort this client joins.
        max_share_holders: largest share-holder group (the cohort on the
            complete graph, degree + 1 on SecAgg+): ShareKeys work and the
            server's relay grow with it (quadratically on the complete graph).
    """

    min_cohort: int = 2
    min_threshold: int = 2
    min_threshold_fraction: float = 0.5
    max_weight_cap: int = 2**20
    assumed_corrupt_fraction: float = 0.0
    max_dropout_fraction: float = 1.0
    mode: SecurityMode | None = None
    min_honest: int = 2
    max_cohort: int = 100_000
    max_share_holders: int = 1_000

    def __post_init__(self) -> None:
        for name in (
            "min_cohort", "min_threshold", "max_weight_cap", "min_honest",
            "max_cohort", "max_share_holders",
        ):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        for name, high in (
            ("min_threshold_fraction", 1.0),
            ("assumed_corrupt_fraction", graph_params.MAX_BAD_FRACTION),
            ("max_dropout_fraction", 1.0),
        ):
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not 0.0 <= value <= high:
                raise ConfigError(f"{name} must be in [0, {high}], got {value!r}")
        if self.mode is not None and not isinstance(self.mode, SecurityMode):
            raise ConfigError(f"mode must be a SecurityMode or None, got {self.mode!r}")

    def check(self, config: SecAggConfig, roster_size: int | None = None) -> None:
        """Raise :class:`PolicyViolation` unless ``config`` is acceptable.

        A hardened session counts the colluders over ``roster_size``, the
        number of consortium members N (default: the cohort is the roster).
        """
        if self.mode is not None and config.mode is not self.mode:
            raise PolicyViolation(
                f"session mode {config.mode.value} is not this client's "
                f"{self.mode.value}"
            )
        n, group = config.num_clients, config.group_size
        if n < self.min_cohort:
            raise PolicyViolation(
                f"cohort of {n} is below this client's minimum of {self.min_cohort}"
            )
        if n > self.max_cohort or group > self.max_share_holders:
            raise PolicyViolation(
                f"cohort of {n} with {group} share holders per secret exceeds "
                f"this client's maximum of {self.max_cohort} clients and "
                f"{self.max_share_holders} share holders"
            )
        if config.mode is SecurityMode.HARDENED:
            self._check_hardened(config, roster_size or n)
        else:
            need = max(self.min_threshold, self._threshold_floor(config))
            if config.threshold < need:
                raise PolicyViolation(
                    f"threshold {config.threshold} is below this client's minimum "
                    f"of {need} for a cohort of {n}"
                )
        if config.max_weight > self.max_weight_cap:
            raise PolicyViolation(
                f"max_weight {config.max_weight} exceeds this client's cap of "
                f"{self.max_weight_cap}"
            )

    def corrupt(self, roster_size: int) -> int:
        """C = max(1, ⌈α·N⌉), the colluders a hardened client assumes."""
        return threat.assumed_corrupt(self.assumed_corrupt_fraction, roster_size)

    def _check_hardened(self, config: SecAggConfig, roster_size: int) -> None:
        n, t, group = config.num_clients, config.threshold, config.group_size
        corrupt = self.corrupt(roster_size)
        if n > roster_size:
            raise PolicyViolation(
                f"cohort of {n} exceeds the consortium roster of {roster_size}"
            )
        least = max(self.min_cohort, corrupt + self.min_honest)
        if n < least:
            raise PolicyViolation(
                f"cohort of {n} is below this client's minimum of {least} "
                f"({corrupt} assumed colluders of a roster of {roster_size} + "
                f"{self.min_honest} honest)"
            )
        floor = self.min_threshold
        if config.graph is GraphKind.COMPLETE:
            floor = max(floor, math.ceil(self.min_threshold_fraction * n - _EPS))
        if t < floor or t - corrupt < self.min_honest:
            raise PolicyViolation(
                f"threshold {t} is below this client's minimum of "
                f"{max(floor, corrupt + self.min_honest)} for a cohort of {n}"
            )
        if 2 * t <= group + corrupt:
            raise PolicyViolation(
                f"threshold {t} gives 2t <= {group} share holders + {corrupt} "
                f"assumed colluders (of a roster of {roster_size}): a malicious "
                "server could collect both kinds of share for one client"
            )
        if (
            config.graph is GraphKind.HARARY
            and self.max_missing(config, roster_size) < 0
        ):
            raise PolicyViolation(
                f"degree {config.degree} cannot keep honest survivors connected "
                f"against {corrupt} assumed colluders (needs degree > {corrupt})"
            )

    def max_missing(self, config: SecAggConfig, roster_size: int) -> int:
        """D: most of a hardened SecAgg+ client's neighbours that may be
        missing (:func:`secagg.threat.max_missing_neighbours`)."""
        return threat.max_missing_neighbours(
            degree=config.degree, corrupt=self.corrupt(roster_size)
        )

    def check_neighbourhood(
        self, config: SecAggConfig, roster_size: int, missing: int
    ) -> None:
        """Refuse when more than D of a SecAgg+ client's neighbours are missing
        (absent, silent, or declared dropped)."""
        allowed = self.max_missing(config, roster_size)
        if missing > allowed:
            raise PolicyViolation(
                f"{missing} of this client's {config.degree} neighbours are "
                f"missing; with {self.corrupt(roster_size)} assumed colluders "
                f"it allows at most {allowed}"
            )

    def _threshold_floor(self, config: SecAggConfig) -> int:
        if config.graph is GraphKind.COMPLETE:
            return math.ceil(self.min_threshold_fraction * config.num_clients - _EPS)
        return graph_params.minimum_threshold(
            config.num_clients,
            config.degree,
            self.assumed_corrupt_fraction,
            threat_model(config.mode),
        )

    def check_dropouts(self, config: SecAggConfig, present: int) -> None:
        """Refuse when more of the announced cohort than allowed is missing."""
        missing = config.num_clients - present
        allowed = math.floor(self.max_dropout_fraction * config.num_clients + _EPS)
        if missing > allowed:
            raise PolicyViolation(
                f"{missing} of {config.num_clients} clients are missing; this "
                f"client's policy allows at most {allowed}"
            )
