"""What a pilot will run, once the data is known: cohort, ε schedule, weight bound.

Some settings can only be fixed once the institutions exist: how many train
per round, how many rounds each is expected to train in (its σ is calibrated
for those), the public bound on an institution's weight, and (when the
config leaves it unset under DP) the secure-aggregation clip, the bound of
an update (`core.pilot.secagg_clip`). `make_plan`
fixes them and asks the owning libraries to accept the result, so every
problem is a `core.errors.ConfigError` naming the TOML key *before* any
folder is created or any round runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dp
import secagg
from core.config import FederationConfig
from core.errors import ConfigError
from core.pilot.schema import LIBRARY_ERRORS, PilotConfig, named_error
from core.pilot.secagg_clip import derived_clip

__all__ = ["RunPlan", "expected_rounds", "make_plan", "max_weight_for"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """The libraries' configs as this pilot's data fixes them."""

    per_round: int
    federation: FederationConfig
    privacy: dp.DPConfig | None
    secure_aggregation: secagg.SecAggSettings | None

    @property
    def planned_rounds(self) -> int:
        """Rounds an institution's σ is calibrated for (all rounds without DP)."""
        if self.privacy is None:
            return self.federation.rounds
        return self.privacy.planned_rounds


def expected_rounds(cfg: PilotConfig, institutions: int) -> int:
    """Rounds an institution expects to train in: σ is calibrated for these,
    so institutions sampled in only some rounds do not leave ε unspent."""
    per_round = cfg.federation.clients_per_round or institutions
    rounds = cfg.federation.config.rounds
    return max(1, math.ceil(rounds * per_round / institutions))


def max_weight_for(sizes: Sequence[int]) -> int:
    """The default public weight bound: the largest institution's training
    rows rounded up to a power of two (so only its order of magnitude is
    published)."""
    return 1 << (max(sizes) - 1).bit_length()


def _replace(obj: Any, table: str, origins: Mapping[str, str], **changes: Any) -> Any:
    """`obj` with `changes`, validated again by its owner; errors name keys."""
    names = {f.name: f"{table}.{f.name}" for f in dataclasses.fields(obj)}
    try:
        return dataclasses.replace(obj, **changes)
    except LIBRARY_ERRORS as exc:
        raise named_error(exc, table, names | dict(origins)) from None


def _cohort(cfg: PilotConfig, names: Sequence[str], sizes: Sequence[int]) -> int:
    for name, n in zip(names, sizes, strict=True):
        if n < cfg.training.batch_size:
            raise ConfigError(
                f"split: institution {name!r} has {n} training rows, fewer "
                f"than training.batch_size = {cfg.training.batch_size}; lower "
                "the batch size, or pool small sites (split.min_site_rows) / use "
                "fewer clients (split.num_clients)"
            )
    k = len(sizes)
    per_round = cfg.federation.clients_per_round or k
    if per_round > k:
        raise ConfigError(
            f"federation.clients_per_round must be <= the {k} institutions; "
            f"found {per_round}"
        )
    return per_round


def _secure_aggregation(
    cfg: PilotConfig,
    sizes: Sequence[int],
    per_round: int,
    vector_length: int,
    privacy: dp.DPConfig | None,
) -> secagg.SecAggSettings | None:
    section = cfg.secure_aggregation
    settings = section.settings
    if settings is None:
        return None
    if per_round < 2:
        raise ConfigError(
            "federation.clients_per_round must be >= 2 with secure aggregation "
            "(a sum of one is that update); found 1"
        )
    if section.clip_from_privacy and privacy is not None:
        settings = _replace(
            settings, "secure_aggregation",
            {"clip": "secure_aggregation.clip (from the DP settings)"},
            clip=derived_clip(privacy, cfg.training, sizes),
        )  # fmt: skip
    if section.max_weight_from_data:
        settings = _replace(
            settings, "secure_aggregation",
            {"max_weight": "secure_aggregation.max_weight (from the data)"},
            max_weight=max_weight_for(sizes),
        )  # fmt: skip
    elif max(sizes) > settings.max_weight:
        raise ConfigError(
            f"secure_aggregation.max_weight must be >= the largest institution's "
            f"{max(sizes)} training rows (a larger weight is refused, never "
            f"capped); found {settings.max_weight}"
        )
    try:
        settings.session_config(num_clients=per_round, vector_length=vector_length)
    except secagg.ConfigError as exc:
        raise ConfigError(
            f"secure_aggregation: a cohort of {per_round} clients with max_weight "
            f"{settings.max_weight} is refused: {exc}"
        ) from None
    return settings


def make_plan(
    cfg: PilotConfig,
    names: Sequence[str],
    sizes: Sequence[int],
    vector_length: int,
) -> RunPlan:
    """Fix the cohort, the DP schedule and the weight bound for institutions
    `names` of `sizes` training rows and updates of `vector_length` values."""
    per_round = _cohort(cfg, names, sizes)
    federation = _replace(
        cfg.federation.config, "federation",
        {"min_fit_clients": "federation.clients_per_round",
         "fraction_fit": "federation.clients_per_round"},
        fraction_fit=per_round / len(sizes), min_fit_clients=per_round,
    )  # fmt: skip
    privacy = cfg.privacy.config
    if privacy is not None:
        privacy = _replace(
            privacy, "privacy", {"planned_rounds": "federation.rounds"},
            planned_rounds=expected_rounds(cfg, len(sizes)),
        )  # fmt: skip
    # The metrics ride in the masked vector too: a few values beyond the model.
    settings = _secure_aggregation(cfg, sizes, per_round, vector_length + 8, privacy)
    return RunPlan(
        per_round=per_round,
        federation=federation,
        privacy=privacy,
        secure_aggregation=settings,
    )
