"""`SecureAggregator`: FedAvg through pairwise-mask secure aggregation.

It implements `core.interfaces.Aggregator` with `secagg.run_session`, so the
server learns only Σ n_k·Δ_k, Σ n_k and the securely summed client metrics of
the clients that survive the session — never one client's update, example
count or metric. Each round is one fresh secagg session whose configuration
binds the round and a hash of the global model the clients trained from.

Client metrics ride in the same masked vector as the update: each value is
mapped from ``[-metric_bound, metric_bound]`` onto the clip range, so the
server recovers the example-weighted mean of every metric, as the plain
aggregator reports it, and nothing per client.

Dropouts can be simulated (``dropout_rate``): a dropped client vanishes
before a random protocol round; below the threshold the round aborts with
`core.errors.RoundAborted` and the federation carries on.

>>> cfg = SecureAggregationConfig(clip=1.0)
>>> cfg.session_config(num_clients=5, vector_length=10, context=b"").threshold
4
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import secagg
from core import _validate as v
from core.errors import RoundAborted
from core.interfaces import AggregateResult, ClientUpdate, RoundContext, StateDict

__all__ = ["SecureAggregationConfig", "SecureAggregator"]

# The rounds before which a simulated dropout may vanish (ADVERTISE_KEYS is
# excluded: a client that never advertises simply is not in the cohort).
_DROP_ROUNDS = (
    secagg.Round.SHARE_KEYS,
    secagg.Round.MASKED_INPUT,
    secagg.Round.UNMASKING,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SecureAggregationConfig:
    """Public parameters of the secure aggregation used every round.

    `clip` bounds each coordinate of Δ (values outside are clipped and
    counted), `value_bits` its quantised precision, `ring_bits` the ring
    Z_2^k, and `max_weight` the public cap on a client's example count (a
    larger count is capped, so choose it above every client's size).

    The graph and threshold are never free knobs: they come from
    `secagg.SecAggConfig.for_cohort` given the cohort size, the dropout rate
    the session must survive (`dropout_tolerance`, δ) and the share of
    clients assumed to collude with the server (`corrupt_fraction`, α) — the
    complete graph with t = ⌈(1−δ)n⌉ below `complete_below` clients, a
    SecAgg+ Harary graph above. `mode` HARDENED adds Ed25519 identities,
    signed keys bound to the model and the ConsistencyCheck round, and
    demands 2t > n + αn. `dropout_rate` simulates clients vanishing
    mid-protocol with a seeded generator (scheduling, not a secret).
    """

    clip: float = 1.0
    value_bits: int = 16
    ring_bits: int = 32
    max_weight: int = 1000
    mode: secagg.SecurityMode = secagg.SecurityMode.SEMI_HONEST
    dropout_tolerance: float = 0.3
    corrupt_fraction: float = 0.0
    complete_below: int = 500
    metric_bound: float = 16.0
    dropout_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        v.check_float(owner, "clip", self.clip, low=0, low_open=True)
        v.check_int(owner, "value_bits", self.value_bits, minimum=2)
        v.check_int(owner, "ring_bits", self.ring_bits, minimum=8)
        v.check_int(owner, "max_weight", self.max_weight, minimum=1)
        v.check_enum(owner, "mode", self.mode, secagg.SecurityMode)
        # Above one half, a client's default policy (t >= n/2) would refuse.
        v.check_float(
            owner, "dropout_tolerance", self.dropout_tolerance, low=0, high=0.5
        )
        v.check_float(
            owner,
            "corrupt_fraction",
            self.corrupt_fraction,
            low=0,
            high=0.5,
            high_open=True,
        )
        v.check_int(owner, "complete_below", self.complete_below, minimum=2)
        v.check_float(owner, "metric_bound", self.metric_bound, low=0, low_open=True)
        v.check_float(
            owner, "dropout_rate", self.dropout_rate, low=0, high=1, high_open=True
        )
        v.check_int(owner, "seed", self.seed, minimum=0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SecureAggregationConfig:
        """Build from plain values, refusing unknown fields."""
        return v.from_mapping(cls, data)

    def session_config(
        self, *, num_clients: int, vector_length: int, context: bytes
    ) -> secagg.SecAggConfig:
        """The secagg session of a round with `num_clients` clients."""
        return secagg.SecAggConfig.for_cohort(
            num_clients=num_clients,
            vector_length=vector_length,
            corrupt_fraction=self.corrupt_fraction,
            dropout_fraction=self.dropout_tolerance,
            complete_below=self.complete_below,
            mode=self.mode,
            ring_bits=self.ring_bits,
            clip=self.clip,
            value_bits=self.value_bits,
            max_weight=self.max_weight,
            context=context,
        )

    def client_policy(self) -> secagg.ClientPolicy:
        """What every simulated client accepts: this config's own assumptions."""
        return secagg.ClientPolicy(
            assumed_corrupt_fraction=self.corrupt_fraction,
            max_dropout_fraction=max(self.dropout_tolerance, self.dropout_rate),
        )


class SecureAggregator:
    """The secure `Aggregator`: one secagg session per round, in process."""

    def __init__(self, config: SecureAggregationConfig | None = None) -> None:
        self.config = config if config is not None else SecureAggregationConfig()
        self.last_session: secagg.SessionResult | None = None
        # Hardened mode: each institution's long-term Ed25519 identity key,
        # made once per client from the OS CSPRNG (a simulated consortium
        # registry). They are secrets, so they are never checkpointed.
        self._identity_keys: dict[int, Ed25519PrivateKey] = {}

    def aggregate(
        self, context: RoundContext, updates: Sequence[ClientUpdate]
    ) -> AggregateResult:
        """Σ n_k Δ_k / Σ n_k over the session's survivors, learnt only as sums."""
        cfg = self.config
        if len(updates) < 2:
            raise RoundAborted(
                f"round {context.round_index}: secure aggregation needs at least 2 "
                f"clients (a sum of one is that client's update); got {len(updates)}"
            )
        keys = sorted(updates[0].metrics)
        if any(sorted(u.metrics) != keys for u in updates):
            raise RoundAborted(
                f"round {context.round_index}: clients report different metric "
                "names; secure aggregation needs one schema for all"
            )
        dim = updates[0].delta.numel()
        n = len(updates)
        model_hash = _model_hash(context)
        try:
            session_cfg = cfg.session_config(
                num_clients=n,
                vector_length=dim + len(keys),
                context=_session_context(context, model_hash),
            )
            inputs = {u.client_id: self._encode(u, keys) for u in updates}
            weights = {
                u.client_id: min(u.num_examples, cfg.max_weight) for u in updates
            }
            result = secagg.run_session(
                inputs,
                weights,
                session_cfg,
                drop=self._dropouts(context, updates),
                policy=cfg.client_policy(),
                identities=self._identities(session_cfg, inputs, model_hash),
            )
        except secagg.ProtocolError as exc:
            # Too few survivors, or a client refused the round: the session
            # fails closed and the federation carries on without this round.
            raise RoundAborted(f"secure aggregation aborted: {exc}") from exc
        except secagg.ConfigError as exc:
            raise RoundAborted(f"secure aggregation refused its config: {exc}") from exc
        self.last_session = result
        if result.total_weight <= 0:
            raise RoundAborted("secure aggregation recovered a total weight of 0")
        mean = result.mean
        metrics = {
            key: float(mean[dim + j]) * cfg.metric_bound / cfg.clip
            for j, key in enumerate(keys)
        }
        metrics["clipped_coordinates"] = float(result.clipped)
        survivors = result.survivors
        model_bytes = dim * updates[0].delta.element_size()
        return AggregateResult(
            mean_delta=mean[:dim].to(updates[0].delta.dtype),
            total_weight=float(result.total_weight),
            num_aggregated=len(survivors),
            dropped=tuple(u.client_id for u in updates if u.client_id not in survivors),
            bytes_up=sum(result.bytes_sent.values()),
            bytes_down=sum(result.bytes_received.values()) + n * model_bytes,
            metrics=metrics,
        )

    def _identities(
        self,
        session_cfg: secagg.SecAggConfig,
        ids: Iterable[int],
        model_hash: bytes,
    ) -> secagg.Identities | None:
        if session_cfg.mode is not secagg.SecurityMode.HARDENED:
            return None
        wanted = sorted(ids)
        fresh = [i for i in wanted if i not in self._identity_keys]
        if fresh:
            _, keys = secagg.make_consortium(fresh)
            self._identity_keys.update(keys)
        registry = secagg.Consortium.from_keys(
            {i: k.public_key() for i, k in self._identity_keys.items()}
        )
        # Every simulated client received the same global model; a real client
        # hashes the model it actually received.
        return secagg.Identities(
            consortium=registry,
            keys={i: self._identity_keys[i] for i in wanted},
            model_hash=model_hash,
        )

    def _encode(self, update: ClientUpdate, keys: Sequence[str]) -> torch.Tensor:
        # Metrics are mapped onto the clip range so they share the update's
        # quantisation; metric_bound / clip undoes it after the secure sum.
        scale = self.config.clip / self.config.metric_bound
        extra = torch.tensor(
            [update.metrics[k] * scale for k in keys], dtype=torch.float64
        )
        return torch.cat([update.delta.detach().to(torch.float64).cpu(), extra])

    def _dropouts(
        self, context: RoundContext, updates: Sequence[ClientUpdate]
    ) -> dict[int, secagg.Round]:
        rate = self.config.dropout_rate
        if rate == 0:
            return {}
        # Simulated network failures: public scheduling randomness, seeded per
        # round so a resumed run drops the same clients as an uninterrupted one.
        rng = np.random.default_rng([self.config.seed, context.round_index])
        drops: dict[int, secagg.Round] = {}
        for u in updates:
            if rng.random() < rate:
                drops[u.client_id] = _DROP_ROUNDS[int(rng.integers(len(_DROP_ROUNDS)))]
        return drops

    def state_dict(self) -> StateDict:
        """Stateless between rounds: every session uses fresh keys."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore; refuses a non-empty state (it is someone else's)."""
        if state:
            raise ValueError(
                "SecureAggregator has no state; found keys " + ", ".join(sorted(state))
            )


def _model_hash(context: RoundContext) -> bytes:
    """SHA-256 of the global model the clients trained from."""
    params = context.global_params.detach().to(torch.float32).cpu().contiguous()
    return hashlib.sha256(params.numpy().tobytes()).digest()


def _session_context(context: RoundContext, model_hash: bytes) -> bytes:
    # Binding the model (and the round, so an advert cannot be replayed into
    # a later round with the same model) into the session id means clients
    # handed different models cannot complete a session together.
    return (
        b"fedshield/core/v1/round" + struct.pack("<Q", context.round_index) + model_hash
    )
