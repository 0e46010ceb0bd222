"""The public settings of a Flower run: the pilot's own config, un-flattened.

Flower hands a run its config flattened (``federation.rounds``). The tables
are rebuilt and parsed by the pilot schema (`core.pilot.schema.parse_config`),
so a Flower run gets the same `FederationConfig`, `LocalTrainingConfig`,
`dp.DPConfig` and `secagg.SecAggSettings`, with the same names, defaults and
validation, as ``fedshield run``. Only what the Flower engines add lives
here: the model's input and output sizes (``[engine]``; the coordinator never
sees the data) and the round's public session context.

Everything here is public: the coordinator sends it in the clear and every
node derives the same secure-aggregation session and model from it. The
institution's own choices (its data, ledger, identity key, the policy it
accepts) live in its node agent's config, never here.

Flower's run config has no null, so a key whose value is the empty string
``""`` is left unset (``privacy.noise_multiplier = ""`` calibrates σ from
``target_epsilon``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from core.config import FederationConfig, LocalTrainingConfig
from core.flower.engine import EngineSection
from core.flower.errors import DeploymentConfigError
from core.pilot.baseline import build_model
from core.pilot.schema import PilotConfig, parse_config
from dp import DPConfig
from secagg import SecAggConfig, SecAggError, SecAggSettings

__all__ = ["AppSettings", "model_hash", "session_context", "unflatten"]

_CONTEXT_LABEL = b"fedshield/flower/v1/round"


def unflatten(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Flower's flattened run config back to the pilot's tables.

    ``"table.key"`` becomes ``tables[table][key]``; a value of ``""`` is
    left out (unset). A key without a table is refused, naming it.
    """
    tables: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        table, dot, name = str(key).partition(".")
        if not (dot and table and name):
            raise DeploymentConfigError(
                f"run config key {key!r} must be TABLE.KEY, e.g. federation.rounds"
            )
        body = tables.setdefault(table, {})
        if not (isinstance(value, str) and value == ""):
            body[name] = value
    return tables


@dataclass(frozen=True, slots=True)
class AppSettings:
    """A run's pilot config and the secure-aggregation settings it must have."""

    pilot: PilotConfig
    secagg: SecAggSettings

    @classmethod
    def from_run_config(cls, flat: Mapping[str, Any]) -> AppSettings:
        """Parse the flattened run config Flower hands to both apps.

        The Flower engines always aggregate securely, and the coordinator
        cannot derive ``max_weight`` from data it never sees, so both are
        required here.
        """
        pilot = parse_config(unflatten(flat))
        sa = pilot.secure_aggregation
        if sa.settings is None:
            raise DeploymentConfigError(
                "secure_aggregation.enabled must be true with the Flower engines"
            )
        if sa.max_weight_from_data:
            raise DeploymentConfigError(
                "secure_aggregation.max_weight must be set with the Flower engines "
                "(the largest institution's rows; a larger one is refused)"
            )
        return cls(pilot=pilot, secagg=sa.settings)

    @property
    def engine(self) -> EngineSection:
        """The ``[engine]`` table: deadlines, model sizes, coordinator files."""
        return self.pilot.engine

    @property
    def federation(self) -> FederationConfig:
        """``[federation]``: rounds and the server step."""
        return self.pilot.federation.config

    @property
    def training(self) -> LocalTrainingConfig:
        """``[training]``: each institution's local training."""
        return self.pilot.training

    @property
    def dp(self) -> DPConfig | None:
        """``[privacy]``: DP-SGD at every institution, or None when off."""
        return self.pilot.privacy.config

    @property
    def output_dir(self) -> str:
        """``run.output_dir``: the coordinator's run folder."""
        return self.pilot.run.output_dir

    def build_model(self) -> nn.Module:
        """The initial global model, as ``fedshield run`` builds it (seeded by
        ``run.seed``, so the same on every party)."""
        inputs, classes = self.engine.num_features, self.engine.num_classes
        if inputs < 1:
            raise DeploymentConfigError(
                "engine.num_features must be >= 1 with the Flower engines: the "
                "coordinator never sees the data, so it cannot infer it"
            )
        return build_model(self.pilot, inputs, classes)

    def session_config(
        self,
        *,
        num_clients: int,
        vector_length: int,
        context: bytes,
        roster_size: int | None = None,
        nonce: bytes | None = None,
    ) -> SecAggConfig:
        """The secure-aggregation session of one round (both sides build it).

        The coordinator draws the session's nonce (``nonce=None``) and sends
        it with the first stage; a node rebuilds the same session from it.
        A hardened session counts colluders over the ``roster_size`` members
        of the roster each party holds, never over the announced cohort.
        """
        try:
            config = self.secagg.session_config(
                num_clients=num_clients,
                vector_length=vector_length,
                context=context,
                roster_size=roster_size,
            )
            if nonce is not None:
                config = dataclasses.replace(config, session_nonce=nonce)
            return config
        except SecAggError as exc:
            raise DeploymentConfigError(f"secure_aggregation: {exc}") from None


def model_hash(model_bytes: bytes) -> bytes:
    """SHA-256 of the global model as it travels (float32, little endian)."""
    return hashlib.sha256(model_bytes).digest()


def session_context(run_id: int, round_index: int, digest: bytes) -> bytes:
    """Public bytes bound into a round's session id: run, round and model.

    A client handed another model, or an advert replayed from another round
    or run, derives another session id and cannot complete the session.
    """
    return _CONTEXT_LABEL + struct.pack("<QQ", run_id, round_index) + digest
