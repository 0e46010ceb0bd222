"""Flower's simulation runtime (Ray): 50 virtual SuperNodes, with dropouts.

The same ServerApp and ClientApp as a deployment; the node agents live in
the Ray actor.  Fifteen institutions fail at chosen stages of the round;
the final model must equal the in-process run with the same schedule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from flwr.app import Context

import secagg
from core.flower.client_app import AgentHandle
from core.flower.errors import AgentError
from core.flower.node import NodeAgent, NodeConfig
from core.flower.protocol import Stage, StageReply, StageRequest
from core.flower.simulation import InProcessAgent, node_agent, run_simulation
from tests.deploy.helpers import (
    breast_cancer_csvs,
    in_process_reference,
    node_configs,
    quantisation_bound,
    read_jsonl,
    run_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CLIENTS = 50
# Institution -> the stage it fails at, every round.
FAILS = {
    **dict.fromkeys(range(0, 5), Stage.TRAIN),
    **dict.fromkeys(range(5, 10), Stage.SHARE_KEYS),
    **dict.fromkeys(range(10, 13), Stage.MASKED_INPUT),
    **dict.fromkeys(range(13, 15), Stage.UNMASKING),
}


class Flaky:
    """An agent that fails (as a crashed node would) at one stage."""

    def __init__(self, agent: NodeAgent, fails_at: Stage | None) -> None:
        self.inner, self.fails_at = InProcessAgent(agent), fails_at

    def request(
        self, run_id: int, request: StageRequest, run_config: Mapping[str, Any]
    ) -> StageReply:
        if request.stage is self.fails_at:
            raise AgentError(f"simulated crash at {request.stage.value}")
        return self.inner.request(run_id, request, run_config)


def _resolver(nodes: list[NodeConfig]):  # type: ignore[no-untyped-def]
    def resolve(context: Context) -> AgentHandle:
        part = int(context.node_config["partition-id"])  # type: ignore[arg-type]
        return Flaky(node_agent(nodes[part]), FAILS.get(part))

    return resolve


def test_fifty_virtual_nodes_with_dropouts(tmp_path: Path) -> None:
    paths, test = breast_cancer_csvs(tmp_path / "data", CLIENTS)
    nodes = node_configs(paths, tmp_path / "ledgers")
    config = run_config(**{
        "run.output_dir": str(tmp_path / "run"),
        "engine.kind": "flower-simulation",
        "federation.rounds": 1,  # the dropouts recur each round: one shows them
        "engine.min_nodes": CLIENTS,
        "engine.test_data": str(test),
        "engine.test_label": "diagnosis",
        "engine.message_log": str(tmp_path / "messages.jsonl"),
        "training.batch_size": 4,
        "secure_aggregation.mode": "semi-honest",
        "secure_aggregation.dropout_tolerance": 0.4,
        "secure_aggregation.ring_bits": 48,
        "secure_aggregation.max_weight": 64,
    })  # fmt: skip
    run_simulation(config, nodes, resolve=_resolver(nodes))
    log = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    rounds = [e for e in log if e["type"] == "round"]
    dropouts = [e["by_stage"] for e in log if e["type"] == "dropouts"]
    assert len(rounds) == 1
    for r, d in zip(rounds, dropouts, strict=True):
        assert r["aborted"] is None
        # Failures at Unmasking come after the masked input: still in the sum.
        assert r["aggregated"] == CLIENTS - 13
        assert len(d["train"]) == 5
        assert sorted(d["share-keys"]) == list(range(5, 10))
        assert sorted(d["masked-input"]) == [10, 11, 12]
        assert sorted(d["unmasking"]) == [13, 14]
    run_id = int(log[0]["run_id"])
    final = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    drop = {i: s.secagg_round for i, s in FAILS.items() if s is not Stage.TRAIN}
    absent = frozenset(i for i, s in FAILS.items() if s is Stage.TRAIN)
    reference = in_process_reference(config, nodes, run_id, absent=absent, drop=drop)
    bound = 2 * quantisation_bound(config) + 1e-6
    assert torch.allclose(final["params"], reference, atol=bound, rtol=0)
    # Every message went through Flower's grid, and the log saw all of them.
    stages = {
        json.loads(line)["records"]["fedshield"]["fields"]["stage"]["str"]
        for line in (tmp_path / "messages.jsonl").read_text().splitlines()
        if json.loads(line)["records"]
    }
    assert stages == {"train", "share-keys", "masked-input", "unmasking"}
    assert secagg.Round.UNMASKING in drop.values()


def test_fedshield_run_runs_the_simulation_engine(tmp_path: Path, capsys) -> None:
    import dp
    from core.pilot.commands import run_main

    cfg = tmp_path / "pilot.toml"
    cfg.write_text(
        '[run]\noutput_dir = "out"\ncentralised_baseline = false\n'
        "[federation]\nrounds = 1\n[split]\nnum_clients = 3\n"
        "[privacy]\nnoise_multiplier = 1.0\nepsilon_budget = 50.0\n"
        "[secure_aggregation]\nring_bits = 40\n"
        '[engine]\nkind = "flower-simulation"\n',
        encoding="utf-8",
    )
    assert run_main([str(cfg), "--output", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert "flower-simulation run written to" in capsys.readouterr().out
    rounds = [e for e in read_jsonl(out / "metrics.jsonl") if e["type"] == "round"]
    assert rounds[0]["aborted"] is None and rounds[0]["aggregated"] == 3
    ledgers = sorted((out / "ledgers").iterdir())
    assert len(ledgers) == 3
    for i, path in enumerate(ledgers):
        entries = dp.read_ledger(path)
        assert len(entries) == 1 and entries[0].client_id == f"institution-{i}"
    # The institutions' rows stayed on their (temporary) nodes.
    assert not list(out.rglob("*.csv"))


def test_fedshield_run_refuses_the_deployment_engine(tmp_path: Path, capsys) -> None:
    from core.pilot.commands import run_main

    cfg = tmp_path / "pilot.toml"
    cfg.write_text('[engine]\nkind = "flower-deployment"\n', encoding="utf-8")
    assert run_main([str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "flwr run" in err
    assert "examples/flower_app/README.md" in err
