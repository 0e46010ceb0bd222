"""What a client accepts, whatever the server announces.

A :class:`ClientPolicy` is the client's own view of a safe session: the
smallest cohort and threshold it joins, the largest weight cap, the share of
clients it assumes collude with the server, and how many of the announced
cohort may go missing.  :meth:`ClientPolicy.check` runs before a client makes
any key; :meth:`ClientPolicy.check_dropouts` whenever a list of present
clients arrives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from secagg import graph as graph_params
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
            the server.  In hardened mode the client demands 2t > n + ⌈α·n⌉
            (n the share holders), so at most one survivor list can ever
            gather t signatures.
        max_dropout_fraction: largest share of the announced cohort that may
            be missing from the survivor list (or the key directory) before
            this client refuses to go on.
        mode: the only :class:`SecurityMode` this client joins; ``None``
            accepts either (the client's credentials still must fit it).
    """

    min_cohort: int = 2
    min_threshold: int = 2
    min_threshold_fraction: float = 0.5
    max_weight_cap: int = 2**20
    assumed_corrupt_fraction: float = 0.0
    max_dropout_fraction: float = 1.0
    mode: SecurityMode | None = None

    def __post_init__(self) -> None:
        for name in ("min_cohort", "min_threshold", "max_weight_cap"):
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

    def check(self, config: SecAggConfig) -> None:
        """Raise :class:`PolicyViolation` unless ``config`` is acceptable."""
        if self.mode is not None and config.mode is not self.mode:
            raise PolicyViolation(
                f"session mode {config.mode.value} is not this client's "
                f"{self.mode.value}"
            )
        if config.num_clients < self.min_cohort:
            raise PolicyViolation(
                f"cohort of {config.num_clients} is below this client's minimum "
                f"of {self.min_cohort}"
            )
        group = config.group_size
        need = max(self.min_threshold, self._threshold_floor(config))
        if config.threshold < need:
            raise PolicyViolation(
                f"threshold {config.threshold} is below this client's minimum of "
                f"{need} for a cohort of {config.num_clients}"
            )
        if config.mode is SecurityMode.HARDENED:
            corrupt = math.ceil(self.assumed_corrupt_fraction * group - _EPS)
            if 2 * config.threshold <= group + corrupt:
                raise PolicyViolation(
                    f"threshold {config.threshold} gives 2t <= {group} share "
                    f"holders + {corrupt} assumed corrupt: a malicious server "
                    "could collect both kinds of share for one client"
                )
        if config.max_weight > self.max_weight_cap:
            raise PolicyViolation(
                f"max_weight {config.max_weight} exceeds this client's cap of "
                f"{self.max_weight_cap}"
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
