"""The two Flower apps that ``flower_deployment.py`` runs on one loopback cluster.

* ours: fedshield's ServerApp (:func:`core.flower.server_app.run_coordinator`)
  with the example app's relay as ClientApp;
* Flower's: ``DefaultWorkflow`` + ``SecAggPlusWorkflow`` (``num_shares=1.0``:
  every node is every node's neighbour, as our complete graph) with
  ``secaggplus_mod`` in front of a ``NumPyClient``.

Both train the same model with the same local trainer on the same CSV of
each node, read the same run config, and talk through :class:`CountingGrid`,
which counts the serialised content of every message pushed to and pulled
from the SuperLink, per node, and pulls replies every ``POLL`` seconds (for
Flower too: its stock ``send_and_receive`` waits 3 s between pulls).

Imports at module level are Flower and numpy only: Flower starts one
ClientApp process per message, and torch is loaded only where training runs.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.common.serde import recorddict_to_proto
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

__all__ = ["CountingGrid", "flower_clientapp", "flower_serverapp", "ours_serverapp"]

POLL = 0.2
STAGE_TIMEOUT = 600.0


def wire_size(msg: Message) -> int:
    """Bytes of a message's content as Flower serialises it (protobuf)."""
    if not msg.has_content():
        return 0
    return int(recorddict_to_proto(msg.content).ByteSize())


class CountingGrid(Grid):
    """A Grid that counts every message's bytes per node (down and up)."""

    def __init__(self, inner: Grid) -> None:
        self._inner = inner
        self.down: dict[int, int] = defaultdict(int)
        self.up: dict[int, int] = defaultdict(int)

    def set_run(self, run: Any) -> None:
        self._inner.set_run(run)

    @property
    def run(self) -> Any:
        return self._inner.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self._inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self._inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        for msg in messages:
            self.down[msg.metadata.dst_node_id] += wire_size(msg)
        return self._inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._inner.pull_messages(message_ids))
        for msg in replies:
            self.up[msg.metadata.src_node_id] += wire_size(msg)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        pending = set(self.push_messages(messages))
        deadline = time.monotonic() + (STAGE_TIMEOUT if timeout is None else timeout)
        out: list[Message] = []
        while pending and time.monotonic() < deadline:
            got = list(self.pull_messages(pending))
            out += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if pending:
                time.sleep(POLL)
        return out

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps({
            "down": {str(k): v for k, v in self.down.items()},
            "up": {str(k): v for k, v in self.up.items()},
        }))  # fmt: skip


# -- ours -------------------------------------------------------------------

ours_serverapp = ServerApp()


@ours_serverapp.main()
def _ours(grid: Grid, context: Context) -> None:
    from core.flower.server_app import run_coordinator
    from core.flower.settings import AppSettings

    settings = AppSettings.from_run_config(context.run_config)
    counting = CountingGrid(grid)
    try:
        run_coordinator(counting, context.run_id, settings)
    finally:
        counting.dump(Path(settings.output_dir) / "bytes.json")


# -- Flower's SecAgg+ ---------------------------------------------------------


class _Timed:
    """The fit workflow, timed per round (setup to unmasking and aggregation)."""

    def __init__(self, inner: Any, out: Path) -> None:
        self.inner, self.out = inner, out
        self.seconds: list[float] = []

    def __call__(self, grid: Grid, context: Any) -> None:
        started = time.perf_counter()
        self.inner(grid, context)
        self.seconds.append(time.perf_counter() - started)
        self.out.write_text(json.dumps({"round_seconds": self.seconds}))


flower_serverapp = ServerApp()


@flower_serverapp.main()
def _flower(grid: Grid, context: Context) -> None:
    from core.flower.settings import AppSettings
    from core.params import ParamSpec

    settings = AppSettings.from_run_config(context.run_config)
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = settings.engine.min_nodes
    model = settings.build_model()
    spec = ParamSpec.from_module(model)
    arrays = [t.numpy() for t in spec.unflatten(spec.flatten(model)).values()]
    strategy = FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
        min_evaluate_clients=0, min_available_clients=n,
        initial_parameters=ndarrays_to_parameters(arrays),
    )  # fmt: skip
    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=settings.federation.rounds),
        strategy=strategy,
    )  # fmt: skip
    sa = settings.secagg
    fit = _Timed(
        SecAggPlusWorkflow(
            num_shares=1.0, reconstruction_threshold=1.0 - sa.dropout_tolerance,
            max_weight=float(sa.max_weight), timeout=STAGE_TIMEOUT,
        ),
        out / "flower_rounds.json",
    )  # fmt: skip
    counting = CountingGrid(grid)
    try:
        DefaultWorkflow(fit_workflow=fit)(counting, legacy)
    finally:
        counting.dump(out / "bytes.json")


class _Client(NumPyClient):
    """Trains like our node agent: same trainer, seed and data."""

    def __init__(self, context: Context) -> None:
        self.node, self.run = dict(context.node_config), dict(context.run_config)

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        import torch

        from core.config import LocalTrainingConfig
        from core.flower.node_data import load_csv
        from core.flower.settings import AppSettings
        from core.interfaces import ClientUpdate, TrainTask
        from core.params import ParamSpec
        from core.trainer import LocalTrainer

        settings = AppSettings.from_run_config(self.run)
        data = load_csv(str(self.node["data"]), "diagnosis")
        model = settings.build_model()
        spec = ParamSpec.from_module(model)
        flat = torch.cat([torch.from_numpy(np.ravel(p)) for p in parameters])
        local = LocalTrainingConfig(
            local_epochs=settings.training.local_epochs,
            batch_size=settings.training.batch_size,
            learning_rate=settings.training.learning_rate,
        )
        trainer = LocalTrainer(model, config=local, seed=int(self.node["seed"]))
        out = trainer.train(TrainTask(round_index=1, client_id=0,
                                      global_params=flat, data=data))  # fmt: skip
        assert isinstance(out, ClientUpdate)
        new = spec.unflatten(flat + out.delta)
        # What Flower's SecAgg+ leaves in the clear: the count and the metrics.
        return ([t.numpy() for t in new.values()], data.num_examples,
                {"train_loss": float(out.metrics["train_loss"])})  # fmt: skip


def _client_fn(context: Context) -> Any:
    return _Client(context).to_client()


flower_clientapp = ClientApp(client_fn=_client_fn, mods=[secaggplus_mod])


# -- the transport floor ------------------------------------------------------

floor_serverapp = ServerApp()


@floor_serverapp.main()
def _floor(grid: Grid, context: Context) -> None:
    """Four round trips of a few bytes per round: what any 4-stage protocol pays."""
    from flwr.app import ConfigRecord, RecordDict

    out = Path(str(context.run_config["run.output_dir"]))
    out.mkdir(parents=True, exist_ok=True)
    rounds = int(context.run_config["federation.rounds"])  # type: ignore[call-overload]
    want = int(context.run_config["engine.min_nodes"])  # type: ignore[call-overload]
    counting = CountingGrid(grid)
    nodes = list(counting.get_node_ids())
    while len(nodes) < want:
        time.sleep(1.0)
        nodes = list(counting.get_node_ids())
    seconds = []
    for r in range(rounds):
        started = time.perf_counter()
        for stage in range(4):
            msgs = [
                Message(RecordDict({"floor": ConfigRecord({"stage": stage})}),
                        dst_node_id=n, message_type="train.floor", group_id=str(r))
                for n in nodes
            ]  # fmt: skip
            counting.send_and_receive(msgs, timeout=STAGE_TIMEOUT)
        seconds.append(time.perf_counter() - started)
    (out / "floor_rounds.json").write_text(json.dumps({"round_seconds": seconds}))
    counting.dump(out / "bytes.json")


floor_clientapp = ClientApp()


@floor_clientapp.train("floor")
def _echo(msg: Message, context: Context) -> Message:
    return Message(msg.content, reply_to=msg)
