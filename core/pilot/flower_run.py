"""``fedshield run`` with ``engine.kind = "flower-simulation"``.

The pilot's institutions (loaded and split as for the in-process engine)
become virtual SuperNodes of Flower's simulation runtime, which runs the same
ServerApp and ClientApp as a deployment (`core.flower.simulation`). The run
folder holds the resolved ``config.toml``, the coordinator's
``metrics.jsonl``, ledger heads and checkpoint, and each institution's
privacy ledger under ``ledgers/``. The institutions' rows are written to
their virtual nodes' files in a temporary folder, never into the run folder.
Needs the ``simulation`` extra (flwr and Ray); `core.flower` is imported only
here, so the CLI's ``--help`` and the in-process engine never load it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from core.params import ParamSpec
from core.pilot.baseline import build_model
from core.pilot.config_file import to_tables, to_toml
from core.pilot.data import load_pilot_data
from core.pilot.plan import make_plan
from core.pilot.runner import prepare_folder, publish
from core.pilot.schema import PilotConfig

__all__ = ["run_flower_simulation"]


def run_flower_simulation(config: PilotConfig) -> Path:
    """Run the pilot on Flower's simulation runtime; returns the run folder."""
    from core.flower.simulation import flatten_tables, simulate_datasets

    data = load_pilot_data(config)
    features, classes = data.table.num_features, data.table.num_classes
    model = build_model(config, features, classes)
    sizes = [c.num_examples for c in data.clients]
    plan = make_plan(config, data.names, sizes, ParamSpec.from_module(model).numel)
    out = Path(config.run.output_dir)
    partial = prepare_folder(out)
    try:
        (partial / "config.toml").write_text(to_toml(config), encoding="utf-8")
        tables = to_tables(config)
        tables["run"]["output_dir"] = str(partial)
        engine = tables["engine"]
        engine |= {"num_features": features, "num_classes": classes}
        # Every virtual node is there from the start: wait for all of them.
        engine["min_nodes"] = engine["min_nodes"] or len(data.clients)
        if plan.secure_aggregation is not None:  # the bound the data fixes
            weight = plan.secure_aggregation.max_weight
            tables["secure_aggregation"]["max_weight"] = weight
        with tempfile.TemporaryDirectory(prefix="fedshield-nodes-") as nodes:
            simulate_datasets(flatten_tables(tables), data.clients, nodes)
            ledgers = Path(nodes) / "ledgers"
            if ledgers.is_dir():
                shutil.copytree(ledgers, partial / "ledgers")
        publish(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out
