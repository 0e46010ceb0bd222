"""The coordinator's FedAvg loop over secure aggregation stages.

Each round: send the global model to every connected node (stage TRAIN,
answered with AdvertiseKeys after local training), then drive the
``secagg`` server through ShareKeys, MaskedInput, ConsistencyCheck (hardened
mode) and Unmasking, one exchange per stage with a deadline.  A node that
misses a deadline, fails, or sends bytes the server rejects is a dropout at
that stage; below the threshold the round aborts and the model is unchanged.
A node that let a deadline pass sits the next round out (a site that went
down costs one deadline, not one per round until Flower notices it is gone)
and is invited again the round after.
Then the server step, evaluation on the coordinator's own test data (if
any), one line in ``metrics.jsonl``, the ledger heads in
``ledger_heads.jsonl`` and an atomic checkpoint.

The coordinator sees the sums ``secagg`` recovers and the public ledger
heads, never one node's update, example count or metric.  A node whose
ledger head goes back (fewer entries, or another head at the same count)
is refused: its budget history was rolled back.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import secagg
from core.aggregation import ServerOptimizer
from core.checkpoint import save_checkpoint
from core.evaluation import evaluate
from core.flower.errors import DeploymentConfigError
from core.flower.protocol import LedgerHead, Stage, StageReply, StageRequest
from core.flower.roster import Roster
from core.flower.settings import AppSettings, model_hash, session_context
from core.flower.transport import Transport
from core.interfaces import ClientDataset
from core.params import ParamSpec
from core.reporting import MetricsLog, RoundRecord

__all__ = ["Coordinator", "CoordinatorResult", "RoundOutcome"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RoundOutcome:
    """What the coordinator learnt in one round (all public or aggregate)."""

    round_index: int
    nodes: int
    advertised: tuple[int, ...] = ()
    survivors: tuple[int, ...] = ()
    dropouts: dict[str, list[int | str]] = field(default_factory=dict)
    aborted: str | None = None
    total_weight: int = 0
    clipped: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    resting: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CoordinatorResult:
    """Final parameters and each round's outcome."""

    params: torch.Tensor
    rounds: tuple[RoundOutcome, ...]


class Coordinator:
    """Runs the rounds of one run (see the module docstring)."""

    def __init__(
        self,
        settings: AppSettings,
        run_id: int,
        transport: Transport,
        *,
        roster: Roster | None = None,
        test_data: ClientDataset | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        if settings.secagg.mode is secagg.SecurityMode.HARDENED and roster is None:
            raise DeploymentConfigError("hardened mode needs the consortium roster")
        self.settings = settings
        self.run_id = run_id
        self._transport = transport
        self._roster = roster
        self._test = test_data
        self._model = settings.build_model()
        self.spec = ParamSpec.from_module(self._model)
        self.params = self.spec.flatten(self._model).to(torch.float32)
        self._opt = ServerOptimizer(
            learning_rate=settings.federation.server_learning_rate,
            momentum=settings.federation.server_momentum,
        )
        self._heads: dict[int, LedgerHead] = {}
        # Nodes that let a deadline pass last round sit the next one out.
        self._resting: set[int] = set()
        self._silent: set[int] = set()
        self.out_dir = None if out_dir is None else Path(out_dir)
        self._log = None if self.out_dir is None else MetricsLog(
            self.out_dir / "metrics.jsonl"
        )  # fmt: skip

    def run(self) -> CoordinatorResult:
        """All rounds; an aborted round leaves the model as it was."""
        s = self.settings
        if self._log is not None:
            self._log.write_header({
                "engine": s.engine.kind.value, "run_id": self.run_id,
                "num_params": self.spec.numel, "rounds": s.federation.rounds,
                "secagg_mode": s.secagg.mode.value, "dp": s.dp is not None,
            })  # fmt: skip
        outcomes = []
        for r in range(1, self.settings.federation.rounds + 1):
            outcomes.append(self.run_round(r))
        return CoordinatorResult(params=self.params.clone(), rounds=tuple(outcomes))

    def run_round(self, r: int) -> RoundOutcome:
        """One round; see the module docstring."""
        started = time.perf_counter()
        connected = self._transport.nodes()
        nodes = [n for n in connected if n not in self._resting]
        outcome = RoundOutcome(round_index=r, nodes=len(nodes))
        outcome.resting = tuple(sorted(set(connected) - set(nodes)))
        self._silent = set()
        try:
            agg = self._secure_sum(r, nodes, outcome)
            mean = (agg.weighted_sum / agg.total_weight).to(torch.float32)
            self.params = self._opt.step(self.params, mean)
            outcome.total_weight, outcome.clipped = agg.total_weight, agg.clipped
            outcome.survivors = tuple(sorted(agg.survivors))
        except (secagg.SecAggError, _NotStartedError) as exc:
            outcome.aborted = f"{type(exc).__name__}: {exc}"
            logger.warning("round %d aborted, model unchanged: %s", r, exc)
        self._resting = self._silent
        self._report(outcome, time.perf_counter() - started)
        return outcome

    # -- one secure sum --------------------------------------------------------

    def _secure_sum(
        self, r: int, nodes: list[int], outcome: RoundOutcome
    ) -> secagg.SecAggAggregate:
        s = self.settings
        if len(nodes) < 2:
            raise _NotStartedError(
                f"{len(nodes)} node(s) connected; a sum needs at least 2"
            )
        model_bytes = self.params.numpy().astype("<f4").tobytes()
        digest = model_hash(model_bytes)
        roster = None if self._roster is None else len(self._roster.consortium.ids)
        cfg = s.session_config(
            num_clients=len(nodes), vector_length=self.spec.numel,
            context=session_context(self.run_id, r, digest), roster_size=roster,
        )  # fmt: skip
        hardened = s.secagg.mode is secagg.SecurityMode.HARDENED
        server = (
            secagg.SecAggServer(cfg, consortium=self._roster.consortium,
                                model_hash=digest)
            if hardened and self._roster is not None else secagg.SecAggServer(cfg)
        )  # fmt: skip
        requests = {
            n: StageRequest(stage=Stage.TRAIN, round_index=r, payload=model_bytes,
                            cohort=len(nodes), nonce=cfg.session_nonce)
            for n in nodes
        }  # fmt: skip
        replies = self._exchange(requests, s.engine.train_timeout, outcome)
        node_of: dict[int, int] = {}
        for node, reply in sorted(replies.items()):
            inst = reply.institution
            problem = self._check_first(inst, reply, node_of)
            if problem is None:
                problem = _feed(server, inst, reply.payload)
            if problem is not None:
                outcome.dropouts.setdefault(Stage.TRAIN.value, []).append(node)
                logger.warning("round %d: node %d refused: %s", r, node, problem)
                continue
            node_of[inst] = node
            if reply.ledger is not None:
                self._heads[inst] = reply.ledger
        outcome.advertised = tuple(sorted(node_of))
        self._later_stages(server, r, node_of, hardened, outcome)
        return server.unmask()

    def _later_stages(
        self,
        server: secagg.SecAggServer,
        r: int,
        node_of: Mapping[int, int],
        hardened: bool,
        outcome: RoundOutcome,
    ) -> None:
        """ShareKeys to Unmasking; a node silent or wrong at a stage drops."""
        s = self.settings
        stages = [Stage.SHARE_KEYS, Stage.MASKED_INPUT]
        stages += [Stage.CONSISTENCY_CHECK] if hardened else []
        stages += [Stage.UNMASKING]
        for stage in stages:
            outgoing = server.broadcast()
            requests = {
                node_of[i]: StageRequest(stage=stage, round_index=r, payload=data)
                for i, data in outgoing.items()
            }
            replies = self._exchange(requests, s.engine.stage_timeout, outcome)
            inst_of = {node: i for i, node in node_of.items()}
            for node in requests:
                answer = replies.get(node)
                problem = "no reply by the deadline" if answer is None else None
                if answer is not None:
                    if (answer.stage, answer.round_index, answer.institution) != (
                        stage,
                        r,
                        inst_of[node],
                    ):
                        problem = "reply names another stage, round or institution"
                    else:
                        problem = _feed(server, inst_of[node], answer.payload)
                if problem is not None:
                    outcome.dropouts.setdefault(stage.value, []).append(inst_of[node])
                    logger.warning("round %d %s: institution %d dropped: %s",
                                   r, stage.value, inst_of[node], problem)  # fmt: skip

    def _check_first(
        self, inst: int, reply: StageReply, node_of: Mapping[int, int]
    ) -> str | None:
        if reply.stage is not Stage.TRAIN:
            return "reply names another stage"
        if inst in node_of:
            return f"institution {inst} answered from two nodes"
        if self._roster is not None and inst not in self._roster.consortium:
            return f"institution {inst} is not in the roster"
        last, head = self._heads.get(inst), reply.ledger
        if last is not None and (
            head is None
            or head.entries < last.entries
            or (head.entries == last.entries and head.sha256 != last.sha256)
        ):
            return (f"ledger of institution {inst} went back from "
                    f"{last.entries} entries")  # fmt: skip
        return None

    def _exchange(
        self,
        requests: Mapping[int, StageRequest],
        timeout: float,
        outcome: RoundOutcome,
    ) -> dict[int, StageReply]:
        outcome.bytes_down += sum(len(q.payload) for q in requests.values())
        got = self._transport.exchange(requests, timeout)
        replies = {}
        for node, reply in got.items():
            if isinstance(reply, str):
                logger.warning("node %d: %s", node, reply)
                continue
            outcome.bytes_up += len(reply.payload)
            replies[node] = reply
        self._silent.update(set(requests) - set(got))
        missing = sorted(set(requests) - set(replies))
        if missing and requests:
            stage = next(iter(requests.values())).stage
            if stage is Stage.TRAIN:
                outcome.dropouts.setdefault(stage.value, []).extend(missing)
        return replies

    # -- outputs ------------------------------------------------------------

    def _report(self, outcome: RoundOutcome, seconds: float) -> None:
        ev = None
        if self._test is not None and outcome.aborted is None:
            self.spec.load_into(self._model, self.params)
            ev = evaluate(self._model, self._test)
        # Advertised but not in the sum (an Unmasking no-show still counts).
        dropped = sorted(set(outcome.advertised) - set(outcome.survivors))
        record = RoundRecord(
            round_index=outcome.round_index,
            total_rounds=self.settings.federation.rounds,
            cohort=outcome.advertised, num_aggregated=len(outcome.survivors),
            dropped=tuple(dropped), aborted=outcome.aborted,
            eval_loss=None if ev is None else ev.loss,
            eval_accuracy=None if ev is None else ev.accuracy,
            metrics={"clipped_coordinates": float(outcome.clipped),
                     "nodes": float(outcome.nodes),
                     "resting": float(len(outcome.resting))},
            bytes_up=outcome.bytes_up, bytes_down=outcome.bytes_down,
            seconds=seconds,
        )  # fmt: skip
        logger.info("round %d: %s", outcome.round_index, record.to_json())
        if self.out_dir is None or self._log is None:
            return
        self._log.write_round(record)
        self._log.write_event("dropouts", {
            "round": outcome.round_index, "by_stage": outcome.dropouts,
            "resting": list(outcome.resting),
        })  # fmt: skip
        heads = {
            str(i): {"entries": h.entries, "sha256": h.sha256}
            for i, h in sorted(self._heads.items())
        }
        with (self.out_dir / "ledger_heads.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps({"round": outcome.round_index, "heads": heads}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        save_checkpoint(self.out_dir / "checkpoint.pt", {
            "round": outcome.round_index, "params": self.params.clone(),
            "server_optimizer": self._opt.state_dict(), "ledger_heads": heads,
        })  # fmt: skip


class _NotStartedError(Exception):
    """The round cannot start (too few nodes)."""


def _feed(server: secagg.SecAggServer, inst: int, payload: bytes) -> str | None:
    try:
        server.receive(inst, payload)
    except secagg.SecAggError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def final_params_array(params: torch.Tensor) -> np.ndarray:
    """The parameters as a float32 numpy array (for reports)."""
    return params.detach().cpu().numpy().astype(np.float32)
