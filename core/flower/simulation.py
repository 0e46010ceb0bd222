"""``flower-simulation``: the same apps on Flower's simulation runtime (Ray).

One virtual SuperNode per institution; partition ``i`` is the institution
of ``nodes[i]``.  Each node's agent lives in the Ray actor's memory, so the
runtime is started with one actor (all of ``simulation_cpus`` per ClientApp):
with several actors, consecutive stages of one node could land in different
processes and the session's secrets would not be there.  On a machine with
few cores this is also the fastest choice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.simulation import run_simulation as flwr_run_simulation

from core.flower.client_app import AgentHandle, make_client_app
from core.flower.errors import AgentError
from core.flower.node import NodeAgent, NodeConfig
from core.flower.node_data import write_csv
from core.flower.protocol import StageReply, StageRequest
from core.flower.server_app import make_server_app
from core.flower.settings import AppSettings
from core.interfaces import ClientDataset

__all__ = [
    "InProcessAgent",
    "agents_by_partition",
    "flatten_tables",
    "node_agent",
    "run_simulation",
    "simulate_datasets",
]

# Node agents of this process (the Ray actor), by their configuration.
_AGENTS: dict[NodeConfig, NodeAgent] = {}


def node_agent(config: NodeConfig) -> NodeAgent:
    """This process's agent for ``config``, built on first use.

    A module-level function on purpose: Ray ships the ClientApp to its actor
    with every message, and a closure shipped by value would carry its own
    copy of the registry (and so a fresh agent, without the session).
    """
    agent = _AGENTS.get(config)
    if agent is None:
        agent = _AGENTS[config] = NodeAgent(config)
    return agent


class InProcessAgent:
    """:class:`AgentHandle` over a :class:`NodeAgent` in this process."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent

    def request(
        self, run_id: int, request: StageRequest, run_config: Mapping[str, Any]
    ) -> StageReply:
        """Answer one stage."""
        return self.agent.handle(run_id, request, run_config)


def agents_by_partition(
    nodes: Sequence[NodeConfig],
) -> Callable[[Context], AgentHandle]:
    """A resolver: the (lazily built) agent of the context's partition."""
    configs = tuple(nodes)

    def resolve(context: Context) -> AgentHandle:
        part = context.node_config.get("partition-id")
        if not isinstance(part, int) or not 0 <= part < len(configs):
            raise AgentError(f"no institution for partition {part!r}")
        return InProcessAgent(node_agent(configs[part]))

    return resolve


def run_simulation(
    run_config: Mapping[str, Any],
    nodes: Sequence[NodeConfig],
    *,
    resolve: Callable[[Context], AgentHandle] | None = None,
) -> None:
    """Run the pilot on the simulation runtime; outputs as a deployment's.

    ``run_config`` is the flattened pilot config (``federation.rounds`` …);
    ``resolve`` replaces the per-partition agents (tests inject failures).
    """
    settings = AppSettings.from_run_config(run_config)
    cpus = settings.engine.simulation_cpus or os.cpu_count() or 1
    flwr_run_simulation(
        server_app=make_server_app(run_config),
        client_app=make_client_app(resolve or agents_by_partition(nodes), run_config),
        num_supernodes=len(nodes),
        backend_config={
            "init_args": {"num_cpus": cpus, "include_dashboard": False},
            "client_resources": {"num_cpus": cpus, "num_gpus": 0.0},
        },
    )


def flatten_tables(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Pilot tables flattened as Flower does: ``federation.rounds`` and so on."""
    return {f"{t}.{k}": v for t, body in tables.items() for k, v in body.items()}


def simulate_datasets(
    run_config: Mapping[str, Any],
    datasets: Sequence[ClientDataset],
    folder: str | Path,
    *,
    label: str = "label",
) -> None:
    """Run the simulation runtime over in-memory institutions (``fedshield run``).

    Each dataset is written as its institution's CSV under
    ``folder/institutions`` and its ledger goes to ``folder/ledgers``; the
    model's sizes and, when ``secure_aggregation.max_weight`` is 0, the
    weight cap (the largest institution) are filled in from the data.
    """
    root = Path(folder)
    config = dict(run_config)
    config.setdefault("engine.num_features", int(datasets[0].features.shape[1]))
    config.setdefault(
        "engine.num_classes",
        max(2, max(int(d.labels.max()) + 1 for d in datasets if d.num_examples)),
    )
    if not config.get("secure_aggregation.max_weight"):
        config["secure_aggregation.max_weight"] = max(d.num_examples for d in datasets)
    nodes = []
    for i, data in enumerate(datasets):
        path = root / "institutions" / f"institution-{i}.csv"
        write_csv(path, data.features, data.labels, label)
        nodes.append(NodeConfig(
            institution=i, data=path, label=label,
            ledger_dir=root / "ledgers", seed=i,
        ))  # fmt: skip
    run_simulation(config, nodes)
