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
from dataclasses import dataclass, field, fields
from typing import Any

from core.flower.errors import DeploymentConfigError

__all__ = ["EngineKind", "EngineSection", "parse_engine"]


def _doc(text: str) -> dict[str, str]:
    """A field's help text, shown in the config template."""
    return {"help": text}


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

    kind: EngineKind = field(
        default=EngineKind.IN_PROCESS,
        metadata=_doc('"in-process", "flower-simulation" or "flower-deployment"'),
    )
    stage_timeout: float = field(
        default=60.0, metadata=_doc("seconds a node has for each later protocol stage")
    )
    train_timeout: float = field(
        default=300.0, metadata=_doc("seconds for local training and AdvertiseKeys")
    )
    connect_timeout: float = field(
        default=120.0, metadata=_doc("seconds to wait for min_nodes SuperNodes")
    )
    min_nodes: int = field(
        default=0, metadata=_doc("SuperNodes before round 1 (0: the roster, or 2)")
    )
    roster: str = field(
        default="", metadata=_doc("coordinator: the consortium roster (hardened)")
    )
    test_data: str = field(
        default="", metadata=_doc("coordinator: held-out CSV to evaluate on")
    )
    test_label: str = field(default="", metadata=_doc("label column of test_data"))
    simulation_cpus: int = field(
        default=0, metadata=_doc("flower-simulation: CPU cores (0: all)")
    )
    num_features: int = field(
        default=0,
        metadata=_doc("Flower: model inputs (0: from the data in simulation)"),
    )
    num_classes: int = field(default=2, metadata=_doc("Flower: model outputs"))
    message_log: str = field(
        default="", metadata=_doc("coordinator: log of every message (audit)")
    )

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
