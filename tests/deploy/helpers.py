"""Shared pieces of the Flower engine tests: data, settings, in-process runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer

import secagg
from core.aggregation import ServerOptimizer
from core.config import LocalTrainingConfig
from core.flower.node import NodeAgent, NodeConfig
from core.flower.node_data import load_csv, write_csv
from core.flower.protocol import StageReply, StageRequest
from core.flower.settings import AppSettings, model_hash, session_context
from core.interfaces import ClientUpdate, TrainTask
from core.params import ParamSpec
from core.trainer import LocalTrainer

LABEL = "diagnosis"


def breast_cancer_csvs(folder: Path, parts: int) -> tuple[list[Path], Path]:
    """Standardised breast-cancer rows split over ``parts`` CSVs, and a test CSV."""
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(7).permutation(len(y))
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x, y = x[order], y[order]
    test_rows = 120
    paths = []
    for i, idx in enumerate(np.array_split(np.arange(test_rows, len(y)), parts)):
        path = folder / f"institution-{i}.csv"
        write_csv(path, torch.tensor(x[idx]), torch.tensor(y[idx]), LABEL)
        paths.append(path)
    test = folder / "test.csv"
    write_csv(test, torch.tensor(x[:test_rows]), torch.tensor(y[:test_rows]), LABEL)
    return paths, test


def run_config(**overrides: Any) -> dict[str, Any]:
    """A flattened pilot config for the breast-cancer model (30 features)."""
    base: dict[str, Any] = {
        "run.seed": 0,
        "federation.rounds": 2,
        "training.batch_size": 16,
        "training.learning_rate": 0.5,
        "privacy.enabled": False,
        "privacy.target_epsilon": "",  # unset: sigma is given
        "privacy.noise_multiplier": 1.0,
        "privacy.epsilon_budget": 50.0,
        "privacy.delta": 1e-4,
        "secure_aggregation.mode": "hardened",
        "secure_aggregation.ring_bits": 48,
        "secure_aggregation.value_bits": 24,
        "secure_aggregation.clip": 4.0,
        "secure_aggregation.max_weight": 512,
        "secure_aggregation.dropout_tolerance": 0.3,
        "engine.num_features": 30,
        "engine.num_classes": 2,
    }
    base.update(overrides)
    return base


class LocalTransport:
    """Routes each request straight to an in-process agent (no network)."""

    def __init__(
        self, run_id: int, agents: Mapping[int, NodeAgent], config: Mapping[str, Any]
    ) -> None:
        self.run_id, self.agents, self.config = run_id, dict(agents), dict(config)
        self.silent: set[int] = set()
        self.seen: list[tuple[int, StageRequest, StageReply | str]] = []
        # Rewrites a node's reply before the coordinator sees it (attacks).
        self.tamper: Callable[[int, StageReply], StageReply] | None = None

    def nodes(self) -> list[int]:
        return sorted(self.agents)

    def exchange(self, requests, timeout):
        out: dict[int, StageReply | str] = {}
        for node, req in requests.items():
            if node in self.silent:
                continue
            try:
                reply = self.agents[node].handle(self.run_id, req, self.config)
                if self.tamper is not None:
                    reply = self.tamper(node, reply)
                out[node] = reply
            except Exception as exc:
                out[node] = f"node error: {exc}"
            self.seen.append((node, req, out[node]))
        return out


def node_configs(
    paths: Sequence[Path], ledgers: Path, pki: Any | None = None
) -> list[NodeConfig]:
    return [
        NodeConfig(
            institution=i,
            data=p,
            label=LABEL,
            ledger_dir=ledgers / f"node-{i}",
            identity_key=None if pki is None else pki.nodes[i].identity_key,
            roster=None if pki is None else pki.roster,
            seed=100 + i,
        )
        for i, p in enumerate(paths)
    ]


def in_process_reference(
    config: Mapping[str, Any],
    nodes: Sequence[NodeConfig],
    run_id: int,
    *,
    absent: frozenset[int] = frozenset(),
    drop: Mapping[int, secagg.Round] | None = None,
) -> torch.Tensor:
    """The same rounds without Flower: secagg.run_session + the server step.

    ``absent`` institutions never answer (they neither train nor advertise);
    ``drop`` vanish before the given secagg round after training.
    """
    settings = AppSettings.from_run_config(config)
    model = settings.build_model()
    spec = ParamSpec.from_module(model)
    params = spec.flatten(model).to(torch.float32)
    local = LocalTrainingConfig(
        local_epochs=settings.training.local_epochs,
        batch_size=settings.training.batch_size,
        learning_rate=settings.training.learning_rate,
    )
    data = [load_csv(n.data, n.label, n.institution) for n in nodes]
    trainers = [LocalTrainer(model, config=local, seed=n.seed) for n in nodes]
    opt = ServerOptimizer(
        learning_rate=settings.federation.server_learning_rate,
        momentum=settings.federation.server_momentum,
    )
    for r in range(1, settings.federation.rounds + 1):
        digest = model_hash(params.numpy().astype("<f4").tobytes())
        cfg = settings.session_config(
            num_clients=len(nodes),
            vector_length=spec.numel,
            context=session_context(run_id, r, digest),
        )
        deltas, weights = {}, {}
        for n, d, t in zip(nodes, data, trainers, strict=True):
            if n.institution in absent:
                continue
            out = t.train(
                TrainTask(
                    round_index=r, client_id=n.institution, global_params=params, data=d
                )
            )
            assert isinstance(out, ClientUpdate)
            deltas[n.institution] = out.delta.to(torch.float64)
            weights[n.institution] = d.num_examples
        result = secagg.run_session(deltas, weights, cfg, drop=drop)
        params = opt.step(params, result.mean.to(torch.float32))
    return params


def quantisation_bound(config: Mapping[str, Any]) -> float:
    """Per-coordinate error bound of one round's secure mean (rounding ≤ 1 step)."""
    s = AppSettings.from_run_config(config)
    step = s.secagg.clip / float((1 << (s.secagg.value_bits - 1)) - 1)
    return step * s.federation.server_learning_rate


def write_toml(path: Path, flat: Mapping[str, Any]) -> Path:
    """Write a flattened config as TOML tables (scalars only)."""
    import json

    tables: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        table, _, name = key.partition(".")
        tables.setdefault(table, {})[name] = value
    lines = []
    for table, body in tables.items():
        lines.append(f"[{table}]")
        for name, value in body.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = json.dumps(value)
            else:
                text = repr(value)
            lines.append(f"{name} = {text}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line]
