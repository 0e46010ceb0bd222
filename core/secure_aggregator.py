"""`SecureAggregator`: FedAvg through pairwise-mask secure aggregation.

It implements `core.interfaces.Aggregator` with `secagg.run_session`, so the
server learns only Σ n_k·Δ_k, Σ n_k and the securely summed client metrics of
the clients that survive the session — never one client's update, example
count or metric. Each round is one fresh secagg session built from the
application's `secagg.SecAggSettings` for that round's cohort; the session
binds the round and a hash of the global model the clients trained from.

Client metrics ride in the same masked vector as the update: each value is
mapped from ``[-metric_bound, metric_bound]`` onto the clip range, so the
server recovers the example-weighted mean of every metric, as the plain
aggregator reports it, and nothing per client.

Where the ring arithmetic runs follows the model: for updates on a CUDA
device the session uses secagg's device-resident ring (`secagg.RingBackend`
``TORCH``: quantisation, masking and the sum stay on the device, and only
the masked wire bytes reach the host); CPU updates use the numpy ring.

A client whose example count exceeds the public ``max_weight`` is refused
(`core.errors.InvalidUpdateError`), never silently capped. Dropouts can be
simulated (`core.config.DropoutSimulation`): a dropped client vanishes before
a random protocol round; below the threshold the round aborts with
`core.errors.RoundAborted` and the federation carries on.

Each round reports how many coordinates the clip cut (``clipped_coordinates``,
securely summed like the update) and their share (``clipped_fraction``); a
share above 1 % is logged as a warning and flagged on the round line.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import secagg
from core import _validate as v
from core.checkpoint import refuse_foreign_state
from core.config import DropoutSimulation
from core.errors import ConfigError, InvalidUpdateError, RoundAborted
from core.interfaces import AggregateResult, ClientUpdate, RoundContext, StateDict
from core.reporting import CLIP_WARNING_FRACTION

__all__ = ["SecureAggregator"]

logger = logging.getLogger(__name__)

# The rounds before which a simulated dropout may vanish (ADVERTISE_KEYS is
# excluded: a client that never advertises simply is not in the cohort).
_DROP_ROUNDS = (
    secagg.Round.SHARE_KEYS,
    secagg.Round.MASKED_INPUT,
    secagg.Round.UNMASKING,
)


class SecureAggregator:
    """The secure `Aggregator`: one secagg session per round, in process.

    `settings` are the public secure-aggregation parameters (validated by
    `secagg`); `simulation` optionally drops clients mid-protocol;
    `metric_bound` is the largest |metric| a client reports (larger values
    are clipped like update coordinates); `backend` forces where the ring
    lives (None: by the updates' device, see the module docstring).
    """

    def __init__(
        self,
        settings: secagg.SecAggSettings,
        *,
        simulation: DropoutSimulation | None = None,
        metric_bound: float = 16.0,
        backend: secagg.RingBackend | None = None,
    ) -> None:
        v.check_float("SecureAggregator", "metric_bound", metric_bound, low=0,
                      low_open=True)  # fmt: skip
        if backend is not None and not isinstance(backend, secagg.RingBackend):
            raise ConfigError(
                f"SecureAggregator.backend must be a secagg.RingBackend or None; "
                f"found {backend!r}"
            )
        self.backend = backend
        self.settings = settings
        self.simulation = simulation if simulation is not None else DropoutSimulation()
        self.metric_bound = float(metric_bound)
        self.last_session: secagg.SessionResult | None = None
        # Hardened mode: each institution's long-term Ed25519 identity key,
        # made once per client from the OS CSPRNG (a simulated consortium
        # registry). They are secrets, so they are never checkpointed.
        self._identity_keys: dict[int, Ed25519PrivateKey] = {}

    def aggregate(
        self, context: RoundContext, updates: Sequence[ClientUpdate]
    ) -> AggregateResult:
        """Σ n_k Δ_k / Σ n_k over the session's survivors, learnt only as sums."""
        keys = _metric_names(context, updates)
        dim = updates[0].delta.numel()
        result = self._session(context, updates, keys)
        self.last_session = result
        if result.total_weight <= 0:
            raise RoundAborted("secure aggregation recovered a total weight of 0")
        mean = result.mean
        extra = mean[dim:].cpu().tolist()  # a few values: one small copy
        metrics = {
            key: extra[j] * self.metric_bound / self.settings.clip
            for j, key in enumerate(keys)
        }
        metrics["clipped_coordinates"] = float(result.clipped)
        metrics["clipped_fraction"] = _clipped_fraction(
            context, result.clipped, len(result.survivors) * (dim + len(keys))
        )
        survivors = result.survivors
        model_bytes = dim * updates[0].delta.element_size()
        delta = updates[0].delta
        return AggregateResult(
            mean_delta=mean[:dim].to(device=delta.device, dtype=delta.dtype),
            total_weight=float(result.total_weight),
            num_aggregated=len(survivors),
            dropped=tuple(u.client_id for u in updates if u.client_id not in survivors),
            bytes_up=sum(result.bytes_sent.values()),
            bytes_down=sum(result.bytes_received.values()) + len(updates) * model_bytes,
            metrics=metrics,
        )

    def _session(
        self,
        context: RoundContext,
        updates: Sequence[ClientUpdate],
        keys: Sequence[str],
    ) -> secagg.SessionResult:
        model_hash = _model_hash(context)
        try:
            session_cfg = self.settings.session_config(
                num_clients=len(updates),
                vector_length=updates[0].delta.numel() + len(keys),
                context=_session_context(context, model_hash),
            )
            inputs = {u.client_id: self._encode(u, keys) for u in updates}
            device = updates[0].delta.device
            return secagg.run_session(
                inputs,
                {u.client_id: u.num_examples for u in updates},
                session_cfg,
                drop=self.simulation.drops(context.round_index, inputs, _DROP_ROUNDS),
                policy=self.settings.client_policy(),
                identities=self._identities(session_cfg, inputs, model_hash),
                device=device,
                backend=self._backend(device),
            )
        except secagg.InvalidInput as exc:
            # A weight above the public max_weight, or a malformed vector: a
            # wrong setting, not a network failure, so the run stops.
            raise InvalidUpdateError(
                f"round {context.round_index}: secure aggregation refused an "
                f"input: {exc}"
            ) from exc
        except secagg.ProtocolError as exc:
            # Too few survivors, or a client refused the round: the session
            # fails closed and the federation carries on without this round.
            raise RoundAborted(f"secure aggregation aborted: {exc}") from exc
        except secagg.ConfigError as exc:
            raise RoundAborted(f"secure aggregation refused its config: {exc}") from exc

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

    def _backend(self, device: torch.device) -> secagg.RingBackend:
        if self.backend is not None:
            return self.backend
        if device.type == "cpu":
            return secagg.RingBackend.NUMPY
        return secagg.RingBackend.TORCH

    def _encode(self, update: ClientUpdate, keys: Sequence[str]) -> torch.Tensor:
        # Metrics are mapped onto the clip range so they share the update's
        # quantisation; metric_bound / clip undoes it after the secure sum.
        # The vector stays on the update's device: a CUDA update never makes
        # a host copy before it is masked.
        delta = update.delta.detach()
        scale = self.settings.clip / self.metric_bound
        extra = torch.tensor(
            [update.metrics[k] * scale for k in keys],
            dtype=torch.float64,
            device=delta.device,
        )
        return torch.cat([delta.to(torch.float64), extra])

    def state_dict(self) -> StateDict:
        """Stateless between rounds: every session uses fresh keys."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore; refuses a non-empty state (it is someone else's)."""
        refuse_foreign_state("SecureAggregator", state)


def _metric_names(context: RoundContext, updates: Sequence[ClientUpdate]) -> list[str]:
    """The one metric schema every client shares (checked before any crypto)."""
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
    return keys


def _clipped_fraction(context: RoundContext, clipped: int, coordinates: int) -> float:
    """The share of the survivors' coordinates the clip cut; warned about
    above `CLIP_WARNING_FRACTION`, since the secure mean is then distorted."""
    fraction = clipped / coordinates if coordinates else 0.0
    if fraction > CLIP_WARNING_FRACTION:
        logger.warning(
            "round %d: secure aggregation clipped %.1f %% of update coordinates "
            "(> %g %%): the secure mean is distorted; raise the clip",
            context.round_index, 100 * fraction, 100 * CLIP_WARNING_FRACTION,
        )  # fmt: skip
    return fraction


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
