"""The schema of a pilot config file (``fedshield run CONFIG.toml``).

Nine TOML tables: the pilot's own four (`core.pilot.sections`: run, data,
split, model), ``[engine]`` (the runtime, `core.flower.engine`), and four
handed, key for key and under the libraries' own names, to the config
objects of the libraries that own them, which validate each value once:

* ``[federation]`` → `core.FederationConfig` (plus the pilot's
  ``clients_per_round``);
* ``[training]`` → `core.LocalTrainingConfig`;
* ``[privacy]`` → `dp.DPConfig` (plus ``enabled``); its batch size, epochs
  and planned rounds come from ``[training]`` and ``[federation]``;
* ``[secure_aggregation]`` → `secagg.SecAggSettings` (plus ``enabled``) and
  `core.DropoutSimulation` (``dropout_rate``).

A library's refusal is re-raised as one `core.errors.ConfigError` line
naming ``table.key``; an unknown table or key is refused with the nearest
valid name, since a typo silently falling back to a default would run another
experiment. Where a library has a default, the pilot uses it; where a library
requires a value, the pilot supplies one (`PILOT_DEFAULTS`). TOML has no
null: a key the library allows to be unset is left out of the file.

>>> cfg = parse_config({"privacy": {"target_epsilon": 2.0}})
>>> cfg.privacy.config.target_epsilon, cfg.data.source.value
(2.0, 'breast_cancer')
>>> try:
...     parse_config({"privacy": {"target_epsilom": 2.0}})
... except ConfigError as exc:
...     print(exc)
unknown key privacy.target_epsilom; did you mean 'target_epsilon'?
"""

from __future__ import annotations

import difflib
import enum
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import dp
import secagg
from core import _validate as v
from core.config import DropoutSimulation, FederationConfig, LocalTrainingConfig
from core.errors import ConfigError, FederationError
from core.flower.engine import EngineSection, parse_engine
from core.pilot.library_help import LIBRARY_HELP
from core.pilot.sections import (
    DataSection,
    ModelSection,
    RunSection,
    SplitSection,
    check_bool,
    check_str,
)

__all__ = [
    "KEYS",
    "LIBRARY_ERRORS",
    "PILOT_DEFAULTS",
    "FederationSection",
    "KeyDoc",
    "PilotConfig",
    "PrivacySection",
    "SecureAggregationSection",
    "build",
    "named_error",
    "parse_config",
]

#: What the libraries raise for a value they refuse.
LIBRARY_ERRORS = (FederationError, dp.PrivacyError, secagg.SecAggError)


def _doc(text: str) -> dict[str, str]:
    """A field's help text, shown in the config template."""
    return {"help": text}


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationSection:
    """[federation]: `FederationConfig` and the pilot's cohort size.

    The library's `seed` is ``run.seed``; pilot runs write no checkpoint.
    """

    clients_per_round: int = field(
        default=0, metadata=_doc("0 = every institution every round")
    )
    config: FederationConfig

    def __post_init__(self) -> None:
        v.check_int("federation", "clients_per_round", self.clients_per_round,
                    minimum=0)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivacySection:
    """[privacy]: DP-SGD at every institution (`config` is None when off).

    The ledgers belong to the institutions, not to a run: they live in
    `ledger_dir` (default ``ledgers/<run.name>``), outside every run folder,
    and a rerun continues them.
    `optimizer` is ``training.optimizer`` in dp's own enum.
    """

    enabled: bool = field(default=True, metadata=_doc("DP-SGD at every institution"))
    ledger_dir: str = field(
        default="",
        metadata=_doc('ledgers kept across runs; "" = ledgers/<run.name>'),
    )
    config: dp.DPConfig | None
    optimizer: dp.LocalOptimizer = dp.LocalOptimizer.SGD

    def __post_init__(self) -> None:
        check_bool("privacy", "enabled", self.enabled)
        check_str("privacy", "ledger_dir", self.ledger_dir)


@dataclass(frozen=True, slots=True, kw_only=True)
class SecureAggregationSection:
    """[secure_aggregation]: the secure sum every round (`settings` is None
    when off). Without ``max_weight`` in the file, `settings` holds the
    smallest weight bound until the runner derives the real one from the
    data (`max_weight_from_data`); without ``clip``, the clip is derived from
    the DP settings under DP (`clip_from_privacy`)."""

    enabled: bool = field(
        default=True, metadata=_doc("pairwise-mask secure aggregation of updates")
    )
    settings: secagg.SecAggSettings | None
    max_weight_from_data: bool
    clip_from_privacy: bool
    simulation: DropoutSimulation

    def __post_init__(self) -> None:
        check_bool("secure_aggregation", "enabled", self.enabled)


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotConfig:
    """A whole pilot: one field per TOML table (see the module docstring)."""

    run: RunSection
    data: DataSection
    split: SplitSection
    model: ModelSection
    federation: FederationSection
    training: LocalTrainingConfig
    privacy: PrivacySection
    secure_aggregation: SecureAggregationSection
    engine: EngineSection


@dataclass(frozen=True, slots=True)
class KeyDoc:
    """One TOML key: its help text and where its value lives in `PilotConfig`."""

    name: str
    help: str
    path: tuple[str, ...]


#: Values the pilot supplies where the owning library leaves the choice to
#: its caller (a required field; target_epsilon, one of a pair that must be
#: chosen, applies only when noise_multiplier is not given).
PILOT_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "federation": {"rounds": 10},
    "privacy": {
        "delta": 1e-4,
        "max_grad_norm": 1.0,
        "epsilon_budget": 8.0,
        "target_epsilon": 4.0,
    },
}
T = TypeVar("T")


_SECTIONS: dict[str, type[Any]] = {
    "run": RunSection,
    "data": DataSection,
    "split": SplitSection,
    "model": ModelSection,
    "federation": FederationSection,
    "training": LocalTrainingConfig,
    "privacy": PrivacySection,
    "secure_aggregation": SecureAggregationSection,
    "engine": EngineSection,
}


def _keys(table: str) -> tuple[KeyDoc, ...]:
    own = tuple(
        KeyDoc(f.name, f.metadata["help"], (table, f.name))
        for f in fields(_SECTIONS[table])
        if "help" in f.metadata
    )
    path, library = LIBRARY_HELP.get(table, ((), {}))
    lib = tuple(KeyDoc(k, h, (table, *path, k)) for k, h in library.items())
    extra = (
        (KeyDoc("dropout_rate", "simulate institutions dropping mid-protocol",
                (table, "simulation", "dropout_rate")),)
        if table == "secure_aggregation" else ()
    )  # fmt: skip
    return own + lib + extra


#: Every TOML key of every table, in file order.
KEYS: Mapping[str, tuple[KeyDoc, ...]] = {t: _keys(t) for t in _SECTIONS}


def _unknown(what: str, key: str, allowed: list[str]) -> ConfigError:
    # `what` is how the key is shown ("key privacy.x", "table [x]"); the
    # suggestion compares the bare names.
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(allowed)
    return ConfigError(f"unknown {what}; {hint}")


def _check_names(data: Mapping[str, Any]) -> None:
    for name, body in data.items():
        if name not in KEYS:
            raise _unknown(f"table [{name}]", str(name), list(KEYS))
        if not isinstance(body, Mapping):
            raise ConfigError(f"[{name}] must be a table; found {body!r}")
        allowed = [k.name for k in KEYS[name]]
        for key in body:
            if key not in allowed:
                raise _unknown(f"key {name}.{key}", str(key), allowed)


def _coerce(cls: type[Any], table: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """TOML's plain values as the field types: enum values to members, arrays
    to tuples. Everything else is left for the owner to validate."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for key, value in values.items():
        hint = hints.get(key)
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            if not isinstance(value, hint):
                members = {m.value: m for m in hint}
                if value not in members:
                    allowed = ", ".join(repr(v) for v in members)
                    raise ConfigError(
                        f"{table}.{key} must be one of {allowed}; found {value!r}"
                    )
                out[key] = members[value]
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            out[key] = tuple(value)
    return out


def named_error(exc: Exception, table: str, origins: Mapping[str, str]) -> ConfigError:
    """A library's message, with the field it names shown as its TOML key."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    found = [
        (m.start(), -len(name), name)
        for name in origins
        if (m := re.search(rf"(?<![\w])(\w+\.)?{re.escape(name)}(?!\w)", text))
    ]
    if not found:
        return ConfigError(f"[{table}]: {text}")
    start, _, name = min(found)
    match = re.match(rf"(\w+\.)?{re.escape(name)}\b", text)
    if start == 0 and match:
        return ConfigError(origins[name] + text[match.end() :])
    return ConfigError(f"{origins[name]}: {text}")


def build(
    cls: type[T],
    table: str,
    values: Mapping[str, Any],
    *,
    derived: Mapping[str, tuple[str, Any]] | None = None,
) -> T:
    """``cls(**values)`` with each value validated by `cls`'s owner.

    `derived` maps a field filled from elsewhere to (the TOML key it comes
    from, its value), so an error about it names that key.
    """
    extra = dict(derived or {})
    origins = {f.name: f"{table}.{f.name}" for f in fields(cls)}  # type: ignore[arg-type]
    origins |= {k: origin for k, (origin, _) in extra.items()}
    kwargs = _coerce(cls, table, values) | {k: val for k, (_, val) in extra.items()}
    try:
        return cls(**kwargs)
    except LIBRARY_ERRORS as exc:
        raise named_error(exc, table, origins) from None


def _split_own(
    table: str, body: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    own_names = {f.name for f in fields(_SECTIONS[table]) if "help" in f.metadata}
    own = {k: v for k, v in body.items() if k in own_names}
    return own, {k: v for k, v in body.items() if k not in own_names}


def _federation(body: Mapping[str, Any], run: RunSection) -> FederationSection:
    own, lib = _split_own("federation", body)
    config = build(
        FederationConfig, "federation", {**PILOT_DEFAULTS["federation"], **lib},
        derived={"seed": ("run.seed", run.seed),
                 "checkpoint_every": ("federation", 0)},
    )  # fmt: skip
    return build(FederationSection, "federation", own, derived={
        "config": ("federation", config)})  # fmt: skip


def _privacy(
    body: Mapping[str, Any], fed: FederationConfig, training: LocalTrainingConfig
) -> PrivacySection:
    own, lib = _split_own("privacy", body)
    section = build(PrivacySection, "privacy", own, derived={"config": ("", None)})
    if not section.enabled:  # a switched-off table is not validated further
        return section
    defaults = dict(PILOT_DEFAULTS["privacy"])
    if "noise_multiplier" in lib:  # σ given: nothing to calibrate
        del defaults["target_epsilon"]
    if training.momentum or training.weight_decay:
        raise ConfigError(
            "training.momentum and training.weight_decay must be 0 with "
            "privacy.enabled = true (DP-SGD trains with plain SGD or Adam); "
            f"found {training.momentum} and {training.weight_decay}"
        )
    config = build(dp.DPConfig, "privacy", {**defaults, **lib}, derived={
        "batch_size": ("training.batch_size", training.batch_size),
        "local_epochs": ("training.local_epochs", training.local_epochs),
        "planned_rounds": ("federation.rounds", fed.rounds),
    })  # fmt: skip
    optimizer = dp.LocalOptimizer(training.optimizer.value)
    return replace(section, config=config, optimizer=optimizer)


def _secure_aggregation(
    body: Mapping[str, Any], run: RunSection
) -> SecureAggregationSection:
    own, lib = _split_own("secure_aggregation", body)
    rate = {k: lib.pop(k) for k in ("dropout_rate",) if k in lib}
    simulation = build(DropoutSimulation, "secure_aggregation", rate,
                       derived={"seed": ("run.seed", run.seed)})  # fmt: skip
    from_data = "max_weight" not in lib
    settings = None
    if own.get("enabled", True):
        values = {"max_weight": 1, **lib} if from_data else lib
        settings = build(secagg.SecAggSettings, "secure_aggregation", values)
    return build(SecureAggregationSection, "secure_aggregation", own, derived={
        "settings": ("secure_aggregation", settings),
        "max_weight_from_data": ("secure_aggregation.max_weight", from_data),
        "clip_from_privacy": ("secure_aggregation.clip", "clip" not in lib),
        "simulation": ("secure_aggregation.dropout_rate", simulation),
    })  # fmt: skip


def parse_config(data: Mapping[str, Any]) -> PilotConfig:
    """Build a `PilotConfig` from parsed TOML (tables of plain values)."""
    _check_names(data)

    def table(name: str) -> Mapping[str, Any]:
        return typing.cast(Mapping[str, Any], data.get(name, {}))

    run = build(RunSection, "run", table("run"))
    training = build(LocalTrainingConfig, "training", table("training"))
    federation = _federation(table("federation"), run)
    return PilotConfig(
        run=run,
        data=build(DataSection, "data", table("data")),
        split=build(SplitSection, "split", table("split")),
        model=build(ModelSection, "model", table("model")),
        federation=federation,
        training=training,
        privacy=_privacy(table("privacy"), federation.config, training),
        secure_aggregation=_secure_aggregation(table("secure_aggregation"), run),
        engine=parse_engine(table("engine")),
    )
