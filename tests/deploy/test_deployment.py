"""A real Flower deployment on loopback: TLS, SuperNode authentication, 4 nodes.

One module-scoped cluster (see ``conftest.py``) runs two pilots with
``flwr run``: hardened secure aggregation without DP (its final model must
equal the in-process run of the same rounds), then DP-SGD with secure
aggregation while one SuperNode is killed mid-round.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import dp
from core.flower.loopback import Cluster
from core.flower.node import ledger_file
from core.flower.node_data import load_csv
from core.flower.roster import load_identity_key
from tests.deploy.helpers import (
    LABEL,
    in_process_reference,
    node_configs,
    quantisation_bound,
    read_jsonl,
    run_config,
    write_toml,
)
from tests.deploy.inspection import inspect_log

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _config(c: Cluster, test: Path, name: str, **extra: object) -> dict[str, object]:
    return run_config(**{
        "run.output_dir": str(c.folder / name),
        "engine.kind": "flower-deployment",
        "engine.roster": str(c.pki.roster),
        "engine.test_data": str(test),
        "engine.test_label": LABEL,
        "engine.min_nodes": 4,
        "engine.connect_timeout": 60.0,
        "engine.train_timeout": 15.0,
        "engine.stage_timeout": 10.0,
        "engine.message_log": str(c.folder / f"{name}-messages.jsonl"),
        **extra,
    })  # fmt: skip


def _run(c: Cluster, config: dict[str, object], name: str) -> list[dict[str, Any]]:
    out = c.flwr_run(write_toml(c.folder / f"{name}.toml", config), timeout=150)
    assert out.returncode == 0, out.stdout.decode()[-3000:] + out.stderr.decode()
    return read_jsonl(c.folder / name / "metrics.jsonl")


def _inspect(c: Cluster, name: str, paths: list[Path], stages: set[str]) -> None:
    """Every message of the run holds only this app's fields (see inspection)."""
    counts = [load_csv(p, LABEL).num_examples for p in paths]
    secrets = [load_identity_key(n.identity_key).private_bytes_raw()
               for n in c.pki.nodes]  # fmt: skip
    seen = inspect_log(c.folder / f"{name}-messages.jsonl", counts, secrets)
    assert seen.stages == stages
    assert seen.masked_lengths == {62 + 2}  # the model, the weight, the clip count
    assert seen.requests >= seen.replies > 0


def _rounds(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in log if e["type"] == "round"]


def test_secure_aggregation_matches_the_in_process_run(cluster) -> None:
    c, paths, test = cluster
    config = _config(c, test, "run-a")
    log = _run(c, config, "run-a")
    rounds = _rounds(log)
    assert [r["aggregated"] for r in rounds] == [4, 4]
    assert all(r["aborted"] is None for r in rounds)
    assert rounds[-1]["eval_accuracy"] > 0.9
    run_id = int(log[0]["run_id"])  # type: ignore[call-overload]
    final = torch.load(c.folder / "run-a" / "checkpoint.pt", weights_only=True)
    nodes = node_configs(paths, c.folder / "unused")
    reference = in_process_reference(config, nodes, run_id)
    # Stochastic rounding: under one quantisation step per coordinate per
    # round, plus float32 rounding of the model.
    bound = 2 * quantisation_bound(config) + 1e-6
    assert torch.allclose(final["params"], reference, atol=bound, rtol=0)
    assert not (final["params"] == 0).all()
    _inspect(
        c,
        "run-a",
        paths,
        {"train", "share-keys", "masked-input", "consistency-check", "unmasking"},
    )
    # DP off: no ledger anywhere.
    assert not list(c.folder.rglob("*.ledger.jsonl"))


def _kill_when(
    c: Cluster,
    log: Path,
    stage: str,
    round_index: int,
    names: list[str],
    stop: threading.Event,
) -> None:
    """Kill ``names`` once the coordinator has pushed ``stage`` of a round."""
    while not stop.is_set():
        if log.exists():
            for line in log.read_text().splitlines():
                fields = (
                    json.loads(line)["records"].get("fedshield", {}).get("fields", {})
                )
                if fields.get("stage") == {"str": stage} and fields.get("round") == {
                    "int": round_index
                }:
                    for name in names:
                        c.kill(name)
                    return
        time.sleep(0.05)


def test_dp_and_secure_aggregation_survive_a_killed_supernode(cluster) -> None:
    c, paths, test = cluster
    config = _config(
        c, test, "run-b",
        **{"privacy.enabled": True, "secure_aggregation.mode": "semi-honest"},
    )  # fmt: skip
    stop = threading.Event()
    killer = threading.Thread(
        target=_kill_when,
        args=(c, c.folder / "run-b-messages.jsonl", "masked-input", 1,
              ["supernode-3", "agent-3"], stop),
        daemon=True,
    )  # fmt: skip
    killer.start()
    try:
        log = _run(c, config, "run-b")
    finally:
        stop.set()
        killer.join(timeout=10)
    rounds = _rounds(log)
    events = [e for e in log if e["type"] == "dropouts"]
    dropouts = [e["by_stage"] for e in events]
    # Round 1: institution 3 vanished after training; the round completes with
    # the three survivors (or would abort cleanly below the threshold).
    first = rounds[0]
    assert first["aborted"] is None or "TooFewSurvivors" in str(first["aborted"])
    assert 3 in {i for ids in dropouts[0].values() for i in ids}
    assert first["aborted"] is not None or first["aggregated"] == 3
    # Round 2 goes on without it.
    assert rounds[1]["aborted"] is None
    assert rounds[1]["aggregated"] == 3 and rounds[1]["cohort"] == [0, 1, 2]
    # The silent node sits round 2 out instead of costing another deadline.
    assert len(events[1]["resting"]) == 1 and rounds[1]["metrics"]["nodes"] == 3
    # Each ledger is on its own node's disk, and nowhere else.
    ledgers = sorted(c.folder.rglob("*.ledger.jsonl"))
    expected = [ledger_file(c.folder / f"node-{i}-ledgers", i) for i in range(4)]
    assert ledgers == sorted(expected)
    entries = [dp.read_ledger(p) for p in expected]
    assert [len(e) for e in entries] == [2, 2, 2, 1]
    for path in c.folder.rglob("*"):
        if path.is_file() and path not in expected:
            assert b'"prev_sha256"' not in path.read_bytes(), path
    _inspect(c, "run-b", paths, {"train", "share-keys", "masked-input", "unmasking"})
    # The coordinator recorded each ledger's head, and only the head.
    heads = read_jsonl(c.folder / "run-b" / "ledger_heads.jsonl")
    assert heads[-1]["heads"] == {
        str(i): {"entries": len(e), "sha256": e[-1].entry_sha256}
        for i, e in enumerate(entries)
    }
