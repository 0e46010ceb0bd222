"""The institution's side of a round: data, training, ledger, secagg client.

:class:`NodeAgent` is the only holder of the institution's records, its
privacy ledger, its identity key and the secrets of the running secure
aggregation session.  It is installed and configured by the institution
(:class:`NodeConfig`), never shipped by the coordinator: the ClientApp that
Flower runs per message only relays bytes to it, so the policy the
institution accepts (minimum cohort, assumed corruption, dropouts) and its
privacy budget are enforced by code the coordinator cannot replace.

Per round it answers the coordinator's stages in order.  The first stage
builds the session (its policy is checked before any training, so a refused
round costs no privacy budget), trains (DP-SGD, or plain), quantises
w·Δ and answers with AdvertiseKeys; later stages feed the ``secagg`` client
and return its bytes.  Secrets stay in this object's memory and are dropped
when the session ends or fails; a new round replaces any older session.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

import dp
import secagg
from core.config import LocalTrainingConfig
from core.flower.errors import AgentError, DeploymentConfigError
from core.flower.node_data import load_csv
from core.flower.protocol import LedgerHead, Stage, StageReply, StageRequest
from core.flower.roster import Roster, load_identity_key, load_roster
from core.flower.settings import AppSettings, model_hash, session_context
from core.interfaces import ClientUpdate, TrainTask
from core.params import ParamSpec
from core.trainer import LocalTrainer

__all__ = ["NodeAgent", "NodeConfig", "ledger_file"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """What an institution configures on its own machine.

    ``seed`` only orders minibatches of plain (non-DP) training; DP-SGD
    draws from the CSPRNG.  The policy fields are this institution's own
    :class:`secagg.ClientPolicy`; ``require_dp`` refuses runs whose config
    turns DP-SGD off, and ``epsilon_cap`` runs whose privacy budget is larger
    (the run config is the coordinator's to write).
    """

    institution: int
    data: Path
    label: str
    ledger_dir: Path
    identity_key: Path | None = None
    roster: Path | None = None
    seed: int = 0
    min_cohort: int = 2
    assumed_corrupt_fraction: float = 0.0
    max_dropout_fraction: float = 0.5
    require_dp: bool = False
    epsilon_cap: float = math.inf

    def policy(self) -> secagg.ClientPolicy:
        """The secure-aggregation terms this institution accepts."""
        return secagg.ClientPolicy(
            min_cohort=self.min_cohort,
            assumed_corrupt_fraction=self.assumed_corrupt_fraction,
            max_dropout_fraction=self.max_dropout_fraction,
        )


def ledger_file(ledger_dir: Path, institution: int) -> Path:
    """Where institution ``institution`` keeps its privacy ledger."""
    return ledger_dir / f"institution-{institution}.ledger.jsonl"


@dataclass(slots=True)
class _Session:
    run_id: int
    round_index: int
    client: secagg.SecAggClient
    quantized: secagg.QuantizedInput
    next_stage: Stage
    hardened: bool


class NodeAgent:
    """One institution's node agent (see the module docstring)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.data = load_csv(config.data, config.label, config.institution)
        # The ledger stays on this machine, readable by the institution only.
        config.ledger_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._identity = (
            None if config.identity_key is None
            else load_identity_key(config.identity_key)
        )  # fmt: skip
        self._roster: Roster | None = (
            None if config.roster is None else load_roster(config.roster)
        )
        if self._roster is not None and self._identity is not None:
            registered = self._roster.consortium.public_key(config.institution)
            if (
                registered.public_bytes_raw()
                != self._identity.public_key().public_bytes_raw()
            ):
                raise DeploymentConfigError(
                    f"identity key {config.identity_key} is not the roster's key "
                    f"for institution {config.institution}"
                )
        self._run: int | None = None
        self._trainer: LocalTrainer | None = None
        self._private: dp.PrivateClient | None = None
        self._session: _Session | None = None

    @property
    def holds_session(self) -> bool:
        """Whether a secure-aggregation session (and its secrets) is held."""
        return self._session is not None

    def ledger_head(self) -> LedgerHead | None:
        """The public head of this institution's ledger (None without DP)."""
        if self._private is None:
            return None
        ledger = self._private.ledger
        return LedgerHead(entries=len(ledger.entries), sha256=ledger.head_sha256)

    def handle(
        self, run_id: int, request: StageRequest, run_config: Mapping[str, Any]
    ) -> StageReply:
        """Answer one stage; :class:`AgentError` (session dropped) on refusal."""
        try:
            if request.stage is Stage.TRAIN:
                payload = self._train(run_id, request, run_config)
            else:
                payload = self._step(run_id, request)
        except Exception as exc:
            # Whatever failed, the session's secrets go now; the coordinator
            # learns only the kind of failure, never its private details.
            if self._session is not None:
                self._session.client.abort()
            self._session = None
            logger.warning("stage %s refused: %s", request.stage.value, exc)
            # Sequencing errors are this agent's own words; any other failure
            # is named by its kind only (its text may hold ε or sizes).
            why = str(exc) if type(exc) is AgentError else type(exc).__name__
            raise AgentError(f"{request.stage.value}: {why}") from exc
        return StageReply(
            stage=request.stage,
            round_index=request.round_index,
            institution=self.config.institution,
            payload=payload,
            ledger=self.ledger_head(),
        )

    # -- the first stage -----------------------------------------------------

    def _check_privacy(self, settings: AppSettings) -> None:
        cfg, run_dp = self.config, settings.dp
        if run_dp is None:
            if cfg.require_dp:
                raise AgentError(
                    "the run turns DP-SGD off; this institution requires it"
                )
            return
        if run_dp.epsilon_budget > cfg.epsilon_cap:
            raise AgentError(
                f"the run's privacy budget {run_dp.epsilon_budget:g} exceeds this "
                f"institution's cap {cfg.epsilon_cap:g}"
            )

    def _start_run(self, run_id: int, settings: AppSettings) -> None:
        self._check_privacy(settings)
        if self._run == run_id:
            return
        model = settings.build_model()
        self._trainer = LocalTrainer(
            model,
            config=LocalTrainingConfig(
                local_epochs=settings.training.local_epochs,
                batch_size=settings.training.batch_size,
                learning_rate=settings.training.learning_rate,
            ),
            seed=self.config.seed,
        )
        self._private = None
        if settings.dp is not None:
            self._private = dp.PrivateClient(
                f"institution-{self.config.institution}",
                self.data.num_examples,
                settings.dp,
                ledger_file(self.config.ledger_dir, self.config.institution),
                # One institution per process, idle between stages and rounds:
                # its next round's CSPRNG noise is drawn then, off the round's
                # critical path (bounded per client by dp).
                prefetch_noise=True,
            )
        self._run = run_id

    def _client(
        self, settings: AppSettings, cfg: secagg.SecAggConfig, digest: bytes
    ) -> secagg.SecAggClient:
        me = self.config.institution
        if settings.secagg.mode is secagg.SecurityMode.SEMI_HONEST:
            return secagg.SecAggClient(cfg, me, policy=self.config.policy())
        if self._identity is None or self._roster is None:
            raise DeploymentConfigError(
                "hardened mode needs this node's identity key and the roster"
            )
        return secagg.SecAggClient(
            cfg, me, policy=self.config.policy(),
            consortium=self._roster.consortium, identity=self._identity,
            model_hash=digest,
            # The sessions this institution signed and the models it
            # contributed to, on its own disk: a coordinator can neither replay
            # an advert nor difference two sessions on one model, even across
            # a restart of this agent.
            participation=secagg.FileParticipationLog(
                self.config.ledger_dir / "secagg-participation"
            ),
        )  # fmt: skip

    def _train(
        self, run_id: int, request: StageRequest, run_config: Mapping[str, Any]
    ) -> bytes:
        self._session = None
        settings = AppSettings.from_run_config(run_config)
        self._start_run(run_id, settings)
        assert self._trainer is not None
        spec = self._trainer.spec
        if len(request.payload) != 4 * spec.numel:
            raise AgentError(
                f"model has {len(request.payload)} bytes; expected {4 * spec.numel}"
            )
        params = torch.from_numpy(
            np.frombuffer(request.payload, dtype="<f4").astype(np.float32)
        )
        digest = model_hash(request.payload)
        cfg = settings.session_config(
            num_clients=request.cohort,
            vector_length=spec.numel,
            context=session_context(run_id, request.round_index, digest),
            roster_size=(
                None if self._roster is None else len(self._roster.consortium.ids)
            ),
            nonce=request.nonce,
        )
        # Built first: a round this institution's policy refuses costs no ε.
        client = self._client(settings, cfg, digest)
        weight = self.data.num_examples
        if weight > cfg.max_weight:  # refused, never capped
            raise AgentError(
                f"this institution has {weight} rows, above the run's "
                f"secure_aggregation.max_weight {cfg.max_weight}"
            )
        delta = self._local_update(settings, request.round_index, params)
        quantized = secagg.quantize_input(delta.to(torch.float64), weight, cfg)
        advert = client.advertise_keys()
        self._session = _Session(
            run_id=run_id, round_index=request.round_index, client=client,
            quantized=quantized, next_stage=Stage.SHARE_KEYS,
            hardened=settings.secagg.mode is secagg.SecurityMode.HARDENED,
        )  # fmt: skip
        return advert

    def _local_update(
        self, settings: AppSettings, round_index: int, params: torch.Tensor
    ) -> torch.Tensor:
        assert self._trainer is not None
        if self._private is None:
            task = TrainTask(
                round_index=round_index, client_id=self.config.institution,
                global_params=params, data=self.data,
            )  # fmt: skip
            out = self._trainer.train(task)
            assert isinstance(out, ClientUpdate)  # the plain trainer never declines
            return out.delta
        # train_round refuses (BudgetExceededError) before spending anything.
        spec: ParamSpec = self._trainer.spec
        model = copy.deepcopy(settings.build_model())
        spec.load_into(model, params)
        result = self._private.train_round(
            model,
            TensorDataset(self.data.features, self.data.labels),
            round_idx=round_index,
            lr=settings.training.learning_rate,
        )
        model.load_state_dict(result.state_dict)
        return spec.flatten(model) - params

    # -- later stages --------------------------------------------------------

    def _step(self, run_id: int, request: StageRequest) -> bytes:
        s = self._session
        if s is None or (s.run_id, s.round_index) != (run_id, request.round_index):
            raise AgentError(f"no session for run {run_id} round {request.round_index}")
        if request.stage is not s.next_stage:
            raise AgentError(
                f"expected stage {s.next_stage.value}, got {request.stage.value}"
            )
        c = s.client
        if request.stage is Stage.SHARE_KEYS:
            out = c.share_keys(request.payload)
            s.next_stage = Stage.MASKED_INPUT
        elif request.stage is Stage.MASKED_INPUT:
            out = c.masked_input(request.payload, s.quantized)
            s.next_stage = Stage.CONSISTENCY_CHECK if s.hardened else Stage.UNMASKING
        elif request.stage is Stage.CONSISTENCY_CHECK:
            out = c.consistency_check(request.payload)
            s.next_stage = Stage.UNMASKING
        else:
            out = c.unmask(request.payload)
            self._session = None  # the client has discarded its secrets
        return out
