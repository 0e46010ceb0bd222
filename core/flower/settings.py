"""The public settings of a Flower run, read from the pilot's TOML tables.

Flower hands a run its config flattened (``federation.rounds``); the pilot
tables keep their names, so one TOML drives every engine.  Everything here
is public: the coordinator sends it in the clear and every node derives the
same secure-aggregation session and model from it.  The institution's own
choices (its data, ledger, identity key, the policy it accepts) live in its
node agent's config, never here.
"""

from __future__ import annotations

import enum
import hashlib
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import dp
import secagg
from core.flower.engine import EngineSection, parse_engine
from core.flower.errors import DeploymentConfigError

__all__ = ["AppSettings", "ModelShape", "model_hash", "session_context"]

_CONTEXT_LABEL = b"fedshield/flower/v1/round"


class ModelShape(enum.Enum):
    """The model every institution trains (as the pilot's ``model.kind``)."""

    LOGISTIC = "logistic"
    MLP = "mlp"


# (table, key) -> (attribute, type, default)
_KEYS: dict[tuple[str, str], tuple[str, type, object]] = {
    ("run", "seed"): ("seed", int, 0),
    ("run", "output_dir"): ("output_dir", str, "runs/flower"),
    ("model", "kind"): ("model_kind", str, "logistic"),
    ("model", "hidden_units"): ("hidden_units", int, 32),
    ("model", "hidden_layers"): ("hidden_layers", int, 1),
    ("federation", "rounds"): ("rounds", int, 10),
    ("federation", "server_learning_rate"): ("server_learning_rate", float, 1.0),
    ("federation", "server_momentum"): ("server_momentum", float, 0.0),
    ("training", "local_epochs"): ("local_epochs", int, 1),
    ("training", "batch_size"): ("batch_size", int, 16),
    ("training", "learning_rate"): ("learning_rate", float, 0.5),
    ("privacy", "enabled"): ("dp_enabled", bool, True),
    ("privacy", "target_epsilon"): ("target_epsilon", float, 4.0),
    ("privacy", "noise_multiplier"): ("noise_multiplier", float, 0.0),
    ("privacy", "delta"): ("delta", float, 1e-4),
    ("privacy", "max_grad_norm"): ("max_grad_norm", float, 1.0),
    ("privacy", "epsilon_budget"): ("epsilon_budget", float, 8.0),
    ("secure_aggregation", "mode"): ("secagg_mode", str, "semi-honest"),
    ("secure_aggregation", "dropout_tolerance"): ("dropout_tolerance", float, 0.3),
    ("secure_aggregation", "corrupt_fraction"): ("corrupt_fraction", float, 0.0),
    ("secure_aggregation", "ring_bits"): ("ring_bits", int, 48),
    ("secure_aggregation", "value_bits"): ("value_bits", int, 16),
    ("secure_aggregation", "clip"): ("clip", float, 1.0),
    ("secure_aggregation", "max_weight"): ("max_weight", int, 1024),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AppSettings:
    """Public settings of one run (see the pilot's tables for each key)."""

    seed: int = 0
    output_dir: str = "runs/flower"
    model_kind: str = "logistic"
    hidden_units: int = 32
    hidden_layers: int = 1
    rounds: int = 10
    server_learning_rate: float = 1.0
    server_momentum: float = 0.0
    local_epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 0.5
    dp_enabled: bool = True
    target_epsilon: float = 4.0
    noise_multiplier: float = 0.0
    delta: float = 1e-4
    max_grad_norm: float = 1.0
    epsilon_budget: float = 8.0
    secagg_mode: str = "semi-honest"
    dropout_tolerance: float = 0.3
    corrupt_fraction: float = 0.0
    ring_bits: int = 48
    value_bits: int = 16
    clip: float = 1.0
    max_weight: int = 1024
    engine: EngineSection = field(default_factory=EngineSection)

    def __post_init__(self) -> None:
        try:
            ModelShape(self.model_kind)
            secagg.SecurityMode(self.secagg_mode)
        except ValueError as exc:
            raise DeploymentConfigError(f"unknown setting value: {exc}") from None
        for name in ("rounds", "local_epochs", "batch_size", "hidden_units",
                     "hidden_layers", "max_weight"):  # fmt: skip
            if getattr(self, name) < 1:
                raise DeploymentConfigError(
                    f"{name} must be >= 1; found {getattr(self, name)}"
                )
        for name in ("learning_rate", "server_learning_rate", "clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise DeploymentConfigError(f"{name} must be > 0; found {value}")

    @classmethod
    def from_run_config(cls, flat: Mapping[str, Any]) -> AppSettings:
        """Read the flattened run config Flower hands to both apps.

        Keys of other tables (``data``, ``split``, ``run.name``) are the
        in-process engine's and are ignored; a known key with a value of the
        wrong type is refused, naming it.
        """
        kwargs: dict[str, Any] = {}
        engine: dict[str, Any] = {}
        for key, value in flat.items():
            table, _, name = str(key).partition(".")
            if table == "engine":
                engine[name] = value
                continue
            spec = _KEYS.get((table, name))
            if spec is None:
                continue
            attr, kind, _ = spec
            kwargs[attr] = _typed(f"{table}.{name}", value, kind)
        return cls(**kwargs, engine=parse_engine(engine))

    @property
    def mode(self) -> secagg.SecurityMode:
        """The secure-aggregation threat model."""
        return secagg.SecurityMode(self.secagg_mode)

    def build_model(self) -> nn.Module:
        """The initial global model, seeded by ``run.seed`` (same on every party)."""
        torch.manual_seed(self.seed)
        inputs, classes = self.engine.num_features, self.engine.num_classes
        if inputs < 1:
            raise DeploymentConfigError(
                "engine.num_features must be >= 1 with the Flower engines: the "
                "coordinator never sees the data, so it cannot infer it"
            )
        if ModelShape(self.model_kind) is ModelShape.LOGISTIC:
            return nn.Sequential(nn.Linear(inputs, classes))
        layers: list[nn.Module] = []
        width = inputs
        for _ in range(self.hidden_layers):
            layers += [nn.Linear(width, self.hidden_units), nn.ReLU()]
            width = self.hidden_units
        return nn.Sequential(*layers, nn.Linear(width, classes))

    def session_config(
        self, *, num_clients: int, vector_length: int, context: bytes
    ) -> secagg.SecAggConfig:
        """The secure-aggregation session of one round (both sides build it)."""
        return secagg.SecAggConfig.for_cohort(
            num_clients=num_clients,
            vector_length=vector_length,
            corrupt_fraction=self.corrupt_fraction,
            dropout_fraction=self.dropout_tolerance,
            mode=self.mode,
            bits=self.ring_bits,
            clip=self.clip,
            value_bits=self.value_bits,
            max_weight=self.max_weight,
            context=context,
        )

    def dp_config(self) -> dp.DPConfig:
        """The DP-SGD configuration of every institution (validated by ``dp``)."""
        return dp.DPConfig(
            delta=self.delta,
            max_grad_norm=self.max_grad_norm,
            epsilon_budget=self.epsilon_budget,
            planned_rounds=self.rounds,
            batch_size=self.batch_size,
            local_epochs=self.local_epochs,
            noise_multiplier=self.noise_multiplier or None,
            target_epsilon=self.target_epsilon or None,
        )


def _typed(name: str, value: object, kind: type) -> object:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool):
        raise DeploymentConfigError(f"{name} must be an integer; found {value!r}")
    if not isinstance(value, kind):
        raise DeploymentConfigError(
            f"{name} must be of type {kind.__name__}; found {value!r}"
        )
    return value


def model_hash(model_bytes: bytes) -> bytes:
    """SHA-256 of the global model as it travels (float32, little endian)."""
    return hashlib.sha256(model_bytes).digest()


def session_context(run_id: int, round_index: int, digest: bytes) -> bytes:
    """Public bytes bound into a round's session id: run, round and model.

    A client handed another model, or an advert replayed from another round
    or run, derives another session id and cannot complete the session.
    """
    return _CONTEXT_LABEL + struct.pack("<QQ", run_id, round_index) + digest
