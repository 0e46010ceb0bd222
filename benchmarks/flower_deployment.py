"""Round wall time and bytes through the SuperLink: our app vs Flower's SecAgg+.

One loopback deployment (TLS SuperLink with SuperNode authentication, n
registered SuperNodes, each with its node agent and its share of the
breast-cancer rows), two ``flwr run`` in one process:

* ours: fedshield's ServerApp and relay ClientApp, semi-honest secure
  aggregation, complete graph, 32-bit ring;
* Flower's: ``SecAggPlusWorkflow(num_shares=1.0)`` + ``secaggplus_mod``
  (every node is every node's neighbour: the same graph), int64 masked
  vectors;
* the transport floor: four round trips of a few bytes per node, what any
  four-stage protocol pays on this runtime before doing any work.

Both train the same MLP (30 → h → 2, h chosen for about d parameters) one
epoch per round with the same local trainer and seeds, read the same run
config, and see every message through the same counting Grid, which also
pulls replies every 0.2 s for both (Flower's own ``send_and_receive`` waits
3 s between pulls).  Round time is measured on the coordinator: ours from
sending the model to the decoded sum and the server step, Flower's around
its fit workflow (setup to unmasking and aggregation).  Bytes are the
serialised message content (protobuf) per node per round, down and up.
Targets: ours at least 3x faster per round, at most 0.55x the bytes.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.flower_deployment [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer

from benchmarks._harness import RESULTS_DIR, fmt, machine_info, print_table, write_json
from core.flower.loopback import Cluster, wait_files
from core.flower.node_data import write_csv
from core.flower.pki import make_test_pki

LABEL = "diagnosis"
FEATURES = 30


def _split(folder: Path, parts: int) -> list[Path]:
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(7).permutation(len(y))
    x = ((x - x.mean(axis=0)) / x.std(axis=0))[order]
    y = y[order]
    paths = []
    for i, idx in enumerate(np.array_split(np.arange(len(y)), parts)):
        paths.append(folder / f"institution-{i}.csv")
        write_csv(paths[-1], torch.tensor(x[idx]), torch.tensor(y[idx]), LABEL)
    return paths


def _config(out: Path, nodes: int, hidden: int, rounds: int) -> dict[str, Any]:
    return {
        "run": {"seed": 0, "output_dir": str(out)},
        "model": {"kind": "mlp", "hidden_units": hidden, "hidden_layers": 1},
        "federation": {"rounds": rounds},
        "training": {"batch_size": 16, "learning_rate": 0.1, "local_epochs": 1},
        "privacy": {"enabled": False},
        "secure_aggregation": {
            "mode": "semi-honest", "ring_bits": 32, "value_bits": 16, "clip": 1.0,
            "max_weight": 1024, "dropout_tolerance": 0.3,
        },
        "engine": {
            "kind": "flower-deployment", "min_nodes": nodes, "num_features": FEATURES,
            "num_classes": 2, "stage_timeout": 600.0, "train_timeout": 600.0,
            "connect_timeout": 120.0,
        },
    }  # fmt: skip


def _toml(tables: dict[str, dict[str, Any]], prefix: str = "") -> str:
    lines = []
    for table, body in tables.items():
        lines.append(f"[{prefix}{table}]")
        for key, value in body.items():
            text = (
                ("true" if value else "false") if isinstance(value, bool)
                else json.dumps(value) if isinstance(value, str) else repr(value)
            )  # fmt: skip
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)


def _app(
    folder: Path, name: str, server: str, client: str, config: dict[str, Any]
) -> Path:
    """A Flower app folder whose components live in importable modules."""
    app = folder / name
    app.mkdir(parents=True)
    (app / "pyproject.toml").write_text(
        "[build-system]\nrequires = [\"hatchling\"]\n"
        "build-backend = \"hatchling.build\"\n\n"
        f"[project]\nname = \"{name.replace('_', '-')}\"\nversion = \"0.1.0\"\n"
        "description = \"benchmark app\"\nlicense = \"Apache-2.0\"\n"
        "dependencies = [\"flwr==1.41.0\"]\n\n"
        "[tool.hatch.build.targets.wheel]\npackages = [\".\"]\n\n"
        "[tool.flwr.app]\npublisher = \"fedshield\"\n\n"
        f"[tool.flwr.app.components]\nserverapp = \"{server}\"\n"
        f"clientapp = \"{client}\"\n\n" + _toml(config, "tool.flwr.app.config.")
    )  # fmt: skip
    return app


def _measure(
    c: Cluster, name: str, app: Path, config: dict[str, Any], nodes: int
) -> dict[str, Any]:
    out = Path(config["run"]["output_dir"])
    cfg = c.folder / f"{name}.toml"
    cfg.write_text(_toml(config))
    proc = c.flwr_run(cfg, timeout=1800, app=app)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout.decode()[-4000:] + proc.stderr.decode())
    counted = json.loads((out / "bytes.json").read_text())
    if name == "floor":
        seconds = json.loads((out / "floor_rounds.json").read_text())["round_seconds"]
    elif name == "ours":
        log = [json.loads(line) for line in (out / "metrics.jsonl").open()]
        rounds = [e for e in log if e["type"] == "round"]
        if any(r["aborted"] for r in rounds):
            raise RuntimeError(f"our rounds aborted: {rounds}")
        seconds = [r["seconds"] for r in rounds]
    else:
        seconds = json.loads((out / "flower_rounds.json").read_text())["round_seconds"]
    n_rounds = len(seconds)
    down = sum(counted["down"].values()) / nodes / n_rounds
    up = sum(counted["up"].values()) / nodes / n_rounds
    return {
        "round_seconds": seconds,
        "round_seconds_median": statistics.median(seconds),
        "bytes_down_per_client_round": down,
        "bytes_up_per_client_round": up,
        "bytes_per_client_round": down + up,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n=4, d~100k, 1 round")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--params", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    nodes = args.nodes or (4 if args.quick else 8)
    params = args.params or (100_000 if args.quick else 1_000_000)
    rounds = args.rounds or (1 if args.quick else 2)
    hidden = (params - 2) // (FEATURES + 3)  # 31h + 2(h + 1) parameters
    d = (FEATURES + 1) * hidden + 2 * (hidden + 1)
    start = machine_info()
    with tempfile.TemporaryDirectory(prefix="fedshield-bench-") as tmp:
        folder = Path(tmp)
        (folder / "logs").mkdir()
        pki = make_test_pki(folder / "pki", [f"node-{i}" for i in range(nodes)])
        paths = _split(folder / "data", nodes)
        c = Cluster(folder=folder, pki=pki,
                    node_config={"data": str(folder / "data" / "institution-{i}.csv"),
                                 "seed": "{i}"})  # fmt: skip
        results: dict[str, Any] = {}
        try:
            ready = [c.start_agent(i, p, LABEL) for i, p in enumerate(paths)]
            c.start_superlink()
            c.register([n.auth_public for n in pki.nodes])
            wait_files(ready, 300)
            for i in range(nodes):
                c.start_supernode(i)
            apps = {
                "ours": ("benchmarks._flower_deployment_apps:ours_serverapp",
                         "fedshield_app.relay:app"),
                "flower_secaggplus": (
                    "benchmarks._flower_deployment_apps:flower_serverapp",
                    "benchmarks._flower_deployment_apps:flower_clientapp"),
                "floor": ("benchmarks._flower_deployment_apps:floor_serverapp",
                          "benchmarks._flower_deployment_apps:floor_clientapp"),
            }  # fmt: skip
            for name, (server, client) in apps.items():
                config = _config(folder / f"out-{name}", nodes, hidden, rounds)
                app = _app(folder / "apps", name, server, client, config)
                results[name] = _measure(c, name, app, config, nodes)
                print(f"{name}: {results[name]}", flush=True)
        finally:
            left = c.stop()
            if left:
                print(f"warning: process groups still alive: {left}", file=sys.stderr)
    ours, flower, floor = (results[k] for k in ("ours", "flower_secaggplus", "floor"))
    speedup = flower["round_seconds_median"] / ours["round_seconds_median"]
    byte_ratio = ours["bytes_per_client_round"] / flower["bytes_per_client_round"]
    up_ratio = ours["bytes_up_per_client_round"] / flower["bytes_up_per_client_round"]
    print_table(
        ["", "round s (median)", "down B/client/round", "up B/client/round",
         "total B/client/round"],
        [[name, fmt(r["round_seconds_median"], 2),
          f"{r['bytes_down_per_client_round']:.0f}",
          f"{r['bytes_up_per_client_round']:.0f}",
          f"{r['bytes_per_client_round']:.0f}"] for name, r in results.items()],
    )  # fmt: skip
    print(
        f"transport floor (4 empty round trips): "
        f"{floor['round_seconds_median']:.2f} s per round"
    )
    print(f"speed-up (Flower / ours): {speedup:.2f}x (target >= 3x: "
          f"{'met' if speedup >= 3 else 'missed'})")  # fmt: skip
    verdict = "met" if byte_ratio <= 0.55 else "missed"
    print(f"bytes (ours / Flower): {byte_ratio:.3f}x total, {up_ratio:.3f}x up "
          f"(target <= 0.55x total: {verdict})")  # fmt: skip
    payload = {
        "quick": args.quick, "nodes": nodes, "params": d, "rounds": rounds,
        "machine_start": start, "machine_end": machine_info(),
        "results": results, "speedup": speedup, "bytes_ratio": byte_ratio,
        "bytes_up_ratio": up_ratio,
        "transport_floor_round_seconds": floor["round_seconds_median"],
    }  # fmt: skip
    name = "flower_deployment_quick.json" if args.quick else "flower_deployment.json"
    write_json(args.out or RESULTS_DIR / name, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
