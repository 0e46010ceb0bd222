"""fedshield on Flower's engines: deployment (SuperLink/SuperNode) and simulation.

Needs the ``flower`` extra (``simulation`` for the Ray runtime).  The pieces:

* :mod:`core.flower.engine`: the ``[engine]`` table (``kind`` and deadlines);
* :mod:`core.flower.server_app`: the ServerApp (coordinator loop,
  :class:`~core.flower.coordinator.Coordinator`);
* :mod:`core.flower.client_app`: the ClientApp, a relay to the institution's
  node agent (:mod:`core.flower.agent`, :class:`~core.flower.node.NodeAgent`),
  which holds the data, the ledger and the session secrets;
* :mod:`core.flower.simulation`: :func:`run_simulation` on the Ray runtime;
* :mod:`core.flower.roster` and :mod:`core.flower.pki`: identity keys,
  consortium roster, and a test PKI for dry runs;
* :mod:`core.flower.loopback`: a whole consortium on one machine (dry runs,
  tests, benchmarks).

Only :mod:`core.flower.engine` and :mod:`core.flower.errors` import without
``flwr``.
"""

from __future__ import annotations

from core.flower.engine import EngineKind, EngineSection, parse_engine
from core.flower.errors import (
    AgentError,
    DeploymentConfigError,
    DeploymentError,
    WireError,
)

__all__ = [
    "AgentError",
    "DeploymentConfigError",
    "DeploymentError",
    "EngineKind",
    "EngineSection",
    "WireError",
    "parse_engine",
]
