"""Cohort-independent settings of the secure aggregation run every round.

:class:`SecAggSettings` holds what an application configures once (clip,
precision, ring, weight cap, threat model and the rates the graph is computed
from) and validates each value here, once.  Every round it builds that
round's :class:`~secagg.config.SecAggConfig` for the cohort at hand
(:meth:`SecAggSettings.session_config`) and the :class:`ClientPolicy` that
accepts exactly such sessions (:meth:`SecAggSettings.client_policy`).

>>> s = SecAggSettings.from_dict({"max_weight": 100, "mode": "hardened"})
>>> cfg = s.session_config(num_clients=10, vector_length=4)
>>> cfg.threshold, cfg.mode.value
(7, 'hardened')
>>> s.client_policy().check(cfg)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from secagg import limits
from secagg.config import COMPLETE_GRAPH_BELOW, SecAggConfig, SecurityMode
from secagg.errors import ConfigError, PolicyViolation
from secagg.graph import MAX_BAD_FRACTION
from secagg.policy import ClientPolicy

__all__ = ["SecAggSettings"]


def _int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be {bound}, got {value}")


def _fraction(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggSettings:
    """The secure-aggregation settings an application configures once.

    Args:
        clip: c, each coordinate is clipped to [-c, c] (and counted).
        value_bits: signed bits of one quantised coordinate (sign included).
        ring_bits: k, sums live in Z_2^k (at most ``MAX_RING_BITS``).
        max_weight: the largest integer weight (example count) a client may
            contribute; a larger one is refused, never capped.
        mode: threat model; ``HARDENED`` adds signed identities, the model
            hash in the session id and the ConsistencyCheck round.
        dropout_tolerance: δ, the share of a cohort that may vanish while the
            session still completes; the threshold follows from it.
        corrupt_fraction: α, the share of clients assumed to collude with the
            server; the threshold and the graph degree follow from it.
        complete_below: cohorts below this size use the complete graph,
            larger ones a SecAgg+ Harary graph.
    """

    clip: float = 1.0
    value_bits: int = 16
    ring_bits: int = 32
    max_weight: int
    mode: SecurityMode = SecurityMode.SEMI_HONEST
    dropout_tolerance: float = 0.3
    corrupt_fraction: float = 0.0
    complete_below: int = COMPLETE_GRAPH_BELOW

    def __post_init__(self) -> None:
        clip = self.clip
        if isinstance(clip, bool) or not isinstance(clip, int | float):
            raise ConfigError(f"clip must be a number, got {clip!r}")
        if not (math.isfinite(clip) and clip > 0):
            raise ConfigError(f"clip must be finite and > 0, got {clip}")
        _int("ring_bits", self.ring_bits, limits.MIN_RING_BITS, limits.MAX_RING_BITS)
        _int("value_bits", self.value_bits, 2, self.ring_bits)
        _int("max_weight", self.max_weight, 1)
        need = self.value_bits + self.max_weight.bit_length() + 1
        if need > self.ring_bits:
            raise ConfigError(
                f"ring_bits must be >= value_bits + bits of max_weight + 1 = "
                f"{need} even for the smallest cohort, got {self.ring_bits}"
            )
        if not isinstance(self.mode, SecurityMode):
            raise ConfigError(f"mode must be a SecurityMode, got {self.mode!r}")
        _fraction("dropout_tolerance", self.dropout_tolerance)
        _fraction("corrupt_fraction", self.corrupt_fraction)
        self._check_rates()
        _int("complete_below", self.complete_below, 1)
        for name in ("clip", "dropout_tolerance", "corrupt_fraction"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def _check_rates(self) -> None:
        drop, corrupt = self.dropout_tolerance, self.corrupt_fraction
        # Hardened: a server that lies about dropouts doubles their weight;
        # this also gives 2·(1 - δ) > 1 + α, so at most one survivor list can
        # gather a complete graph's ⌈(1 - δ)·n⌉ signatures.
        if self.mode is SecurityMode.HARDENED:
            bad, rule = corrupt + 2 * drop, "corrupt_fraction + 2·dropout_tolerance"
        else:
            bad, rule = corrupt + drop, "corrupt_fraction + dropout_tolerance"
        if bad > MAX_BAD_FRACTION:
            raise ConfigError(
                f"{rule} must be <= {MAX_BAD_FRACTION} ({self.mode.value}), got "
                f"{bad:g} (corrupt_fraction={corrupt}, dropout_tolerance={drop})"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SecAggSettings:
        """Build from plain values (a parsed TOML table, JSON).

        Unknown keys are refused, naming the allowed ones; ``mode`` may be
        given by its value (``"semi-honest"`` or ``"hardened"``).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"settings must be a mapping, got {type(data).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in data if k not in allowed)
        if unknown:
            raise ConfigError(
                f"unknown secure-aggregation settings {unknown}; allowed: "
                + ", ".join(allowed)
            )
        values = dict(data)
        mode = values.get("mode")
        if isinstance(mode, str):
            try:
                values["mode"] = SecurityMode(mode)
            except ValueError:
                choices = ", ".join(repr(m.value) for m in SecurityMode)
                raise ConfigError(
                    f"mode must be one of {choices}, got {mode!r}"
                ) from None
        if "max_weight" not in values:
            raise ConfigError("max_weight is required (the largest client weight)")
        return cls(**values)

    def session_config(
        self,
        *,
        num_clients: int,
        vector_length: int,
        context: bytes = b"",
        roster_size: int | None = None,
    ) -> SecAggConfig:
        """The session of one round with ``num_clients`` clients.

        Graph, degree and threshold come from
        :meth:`SecAggConfig.for_cohort`; a cohort this settings' own
        :meth:`client_policy` would refuse raises :class:`ConfigError` here.
        A hardened session counts colluders over the consortium roster of
        ``roster_size`` members (default: the cohort is the whole roster).
        """
        roster = num_clients if roster_size is None else roster_size
        config = SecAggConfig.for_cohort(
            num_clients=num_clients,
            vector_length=vector_length,
            corrupt_fraction=self.corrupt_fraction,
            dropout_fraction=self.dropout_tolerance,
            max_weight=self.max_weight,
            complete_below=self.complete_below,
            mode=self.mode,
            ring_bits=self.ring_bits,
            clip=self.clip,
            value_bits=self.value_bits,
            context=context,
            roster_size=roster,
        )
        try:
            self.client_policy().check(config, roster)
        except PolicyViolation as exc:
            raise ConfigError(
                f"a cohort of {num_clients} gives a session clients refuse: {exc}"
            ) from None
        return config

    def client_policy(self) -> ClientPolicy:
        """What a client accepts: the sessions :meth:`session_config` builds.

        The threshold floor is the one ``session_config`` builds to: at least
        ⌈(1 - δ)·n⌉ on the complete graph, the SecAgg+ bound for α on a
        Harary graph; no more than δ of the cohort may drop; weights up to
        ``max_weight``; this settings' mode only.
        """
        return ClientPolicy(
            min_cohort=2,
            min_threshold=2,
            min_threshold_fraction=1.0 - self.dropout_tolerance,
            max_weight_cap=self.max_weight,
            assumed_corrupt_fraction=self.corrupt_fraction,
            max_dropout_fraction=self.dropout_tolerance,
            mode=self.mode,
        )
