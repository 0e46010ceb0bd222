"""The ``[engine]`` table of a pilot config: which runtime runs the pilot.

``kind`` chooses the runtime; the other keys only matter to the Flower
engines (the in-process engine ignores them):

* ``in-process``: every institution in one Python process (the default);
* ``flower-simulation``: Flower's simulation runtime (Ray back end), the
  same ServerApp and ClientApp as a deployment, one virtual SuperNode per
  institution;
* ``flower-deployment``: one SuperNode per institution and a SuperLink at
  the coordinator, started by their operators; ``flwr run`` starts the
  pilot (``fedshield run`` refuses it and says so).

>>> parse_engine({"kind": "flower-simulation"}).kind
<EngineKind.FLOWER_SIMULATION: 'flower-simulation'>
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from core.flower.errors import DeploymentConfigError

__all__ = ["EngineKind", "EngineSection", "parse_engine"]


class EngineKind(enum.Enum):
    """Which runtime runs the pilot."""

    IN_PROCESS = "in-process"
    FLOWER_SIMULATION = "flower-simulation"
    FLOWER_DEPLOYMENT = "flower-deployment"


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSection:
    """The ``[engine]`` table.

    ``stage_timeout`` is the deadline, in seconds, of every protocol stage
    after the first: a node that has not answered by then is a dropout at
    that stage. ``train_timeout`` is the deadline of the first stage (local
    training and AdvertiseKeys). ``min_nodes`` is how many SuperNodes must be
    connected before the first round starts (0: every institution of the
    roster, or 2 without one), waited for at most ``connect_timeout``
    seconds. ``roster`` is the coordinator's copy of the consortium roster
    (hardened mode), ``test_data``/``test_label`` an optional held-out CSV on
    the coordinator for evaluation. ``simulation_cpus`` is the number of CPU
    cores the simulation runtime may use (0: all). ``num_features`` and
    ``num_classes`` fix the model's input and output sizes: the coordinator
    never sees the institutions' data, so it cannot infer them.
    ``message_log`` (a file on the coordinator; empty: off) records every
    message the coordinator pushes and pulls, field by field, for an audit
    of what crossed the network.
    """

    kind: EngineKind = EngineKind.IN_PROCESS
    stage_timeout: float = 60.0
    train_timeout: float = 300.0
    connect_timeout: float = 120.0
    min_nodes: int = 0
    roster: str = ""
    test_data: str = ""
    test_label: str = ""
    simulation_cpus: int = 0
    num_features: int = 0
    num_classes: int = 2
    message_log: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, EngineKind):
            raise DeploymentConfigError(
                "engine.kind must be one of "
                + ", ".join(repr(k.value) for k in EngineKind)
                + f"; found {self.kind!r}"
            )
        for name in ("stage_timeout", "train_timeout", "connect_timeout"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise DeploymentConfigError(
                    f"engine.{name} must be a number of seconds > 0; found {value!r}"
                )
        for name in ("min_nodes", "simulation_cpus", "num_features", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DeploymentConfigError(
                    f"engine.{name} must be an integer >= 0; found {value!r}"
                )
        for name in ("roster", "test_data", "test_label", "message_log"):
            if not isinstance(getattr(self, name), str):
                raise DeploymentConfigError(
                    f"engine.{name} must be a string; found {getattr(self, name)!r}"
                )
        if self.num_classes < 2:
            raise DeploymentConfigError(
                f"engine.num_classes must be >= 2; found {self.num_classes}"
            )
        if self.test_data and not self.test_label:
            raise DeploymentConfigError(
                "engine.test_label must name the label column of engine.test_data"
            )


def parse_engine(table: Mapping[str, Any]) -> EngineSection:
    """Build the ``[engine]`` table from parsed TOML, refusing unknown keys."""
    if not isinstance(table, Mapping):
        raise DeploymentConfigError(f"[engine] must be a table; found {table!r}")
    allowed = [f.name for f in fields(EngineSection)]
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in allowed:
            raise DeploymentConfigError(
                f"unknown key engine.{key}; allowed: " + ", ".join(allowed)
            )
        kwargs[key] = value
    if "kind" in kwargs:
        try:
            kwargs["kind"] = EngineKind(kwargs["kind"])
        except ValueError:
            raise DeploymentConfigError(
                "engine.kind must be one of "
                + ", ".join(repr(k.value) for k in EngineKind)
                + f"; found {kwargs['kind']!r}"
            ) from None
    return EngineSection(**kwargs)
