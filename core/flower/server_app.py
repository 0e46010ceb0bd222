"""The Flower ServerApp: the coordinator's FedAvg loop over secure aggregation.

``@app.main()`` reads the run's public settings from the run config (the
pilot's TOML tables, flattened by Flower), waits for the nodes, and runs
:class:`~core.flower.coordinator.Coordinator` over the Grid.  Output goes to
``run.output_dir`` on the coordinator: ``metrics.jsonl``,
``ledger_heads.jsonl``, ``checkpoint.pt`` and, when ``engine.message_log``
is set, the field-by-field log of every message.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from core.flower.coordinator import Coordinator
from core.flower.node_data import load_csv
from core.flower.roster import load_roster
from core.flower.settings import AppSettings
from core.flower.transport import GridTransport

__all__ = ["app", "make_server_app", "message_logger", "run_coordinator"]

logger = logging.getLogger(__name__)


def message_logger(path: str | Path) -> Callable[[str, Message], None]:
    """An observer writing each message's records, field by field, as JSON lines."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    def observe(direction: str, msg: Message) -> None:
        entry: dict[str, Any] = {
            "direction": direction,
            "time": time.time(),
            "message_type": msg.metadata.message_type,
            "src": msg.metadata.src_node_id,
            "dst": msg.metadata.dst_node_id,
            "error": msg.error.reason if msg.has_error() else None,
            "records": {},
        }
        if msg.has_content():
            content = msg.content
            for name in content:
                record = content[name]
                entry["records"][name] = {
                    "kind": type(record).__name__,
                    "fields": {
                        k: _jsonable(v)
                        for k, v in dict(record).items()  # type: ignore[call-overload]
                    },
                }
        with target.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    return observe


def _jsonable(value: object) -> Any:
    if isinstance(value, bytes):
        return {"bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, str | int | float | bool):
        return {type(value).__name__: value}
    return {"other": type(value).__name__}


def run_coordinator(grid: Grid, run_id: int, settings: AppSettings) -> None:
    """Wait for the nodes, then run every round (both runtimes use this)."""
    eng = settings.engine
    roster = load_roster(eng.roster) if eng.roster else None
    observe = message_logger(eng.message_log) if eng.message_log else None
    transport = GridTransport(grid, observe=observe)
    want = eng.min_nodes or (len(roster.consortium.ids) if roster else 2)
    nodes = transport.wait_for_nodes(want, eng.connect_timeout)
    logger.info("%d node(s) connected (waited for %d)", len(nodes), want)
    test = load_csv(eng.test_data, eng.test_label) if eng.test_data else None
    Coordinator(
        settings, run_id, transport, roster=roster, test_data=test,
        out_dir=settings.output_dir,
    ).run()  # fmt: skip


def make_server_app(run_config: Mapping[str, Any] | None = None) -> ServerApp:
    """A ServerApp; ``run_config`` replaces the run's own (simulation)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = context.run_config if run_config is None else run_config
        run_coordinator(grid, context.run_id, AppSettings.from_run_config(config))

    return app


#: The deployment ServerApp (the example app's ``serverapp`` component).
app = make_server_app()
