"""Run a whole session in process: for tests, simulations and benchmarks.

Every message still goes through ``to_bytes``/``from_bytes``, so the byte
counts are those a real transport would carry.

>>> import torch
>>> cfg = SecAggConfig(num_clients=3, threshold=2, vector_length=2, max_weight=7)
>>> r = run_session([torch.tensor([0.5, -0.25])] * 3, [1, 2, 3], cfg,
...                 drop={2: Round.MASKED_INPUT})
>>> sorted(r.survivors), r.total_weight
([0, 1], 3)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg.backend import select_ring
from secagg.client import SecAggClient
from secagg.config import Round, SecAggConfig, SecurityMode
from secagg.errors import ConfigError, InvalidInput
from secagg.identity import Consortium, make_consortium
from secagg.participation import MemoryParticipationLog, ParticipationLog
from secagg.policy import ClientPolicy
from secagg.quantize import QuantizedInput, check_weight, quantize_input
from secagg.ring import RingArray, RingBackend
from secagg.server import SecAggServer

__all__ = ["Identities", "SessionResult", "run_quantized_session", "run_session"]

Vector = torch.Tensor | npt.NDArray[np.floating]
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SessionResult:
    """Outcome of :func:`run_session`.

    ``weighted_sum`` is Σ w·x over ``survivors`` (the clients whose masked
    input reached the server, U3) as a float64 tensor; ``mean`` is
    ``weighted_sum / total_weight``; ``clipped`` is the securely summed count
    of coordinates that fell outside ``[-clip, clip]``; ``responders`` are the
    survivors that answered Unmasking.  Byte counts are per client id.
    """

    weighted_sum: torch.Tensor
    total_weight: int
    mean: torch.Tensor
    survivors: frozenset[int]
    responders: frozenset[int]
    bytes_sent: Mapping[int, int]
    bytes_received: Mapping[int, int]
    clipped: int
    ring_sum: RingArray


def _by_id(values: Sequence[T] | Mapping[int, T]) -> dict[int, T]:
    if isinstance(values, Mapping):
        return dict(values)
    return dict(enumerate(values))


def _vanish_round(rnd: Round, hardened: bool) -> Round:
    # A semi-honest session has no ConsistencyCheck round: vanishing before it
    # means vanishing before the next round that exists.
    if rnd is Round.CONSISTENCY_CHECK and not hardened:
        return Round.UNMASKING
    return rnd


@dataclass(frozen=True, slots=True, kw_only=True)
class Identities:
    """Hardened-mode inputs of a simulated cohort: the consortium registry,
    each client's Ed25519 signing key, the hash of the model sent, and each
    client's participation log (fresh in-memory logs when ``None``: a
    simulation in one process; a deployment passes durable ones)."""

    consortium: Consortium
    keys: Mapping[int, Ed25519PrivateKey]
    model_hash: bytes
    participation: Mapping[int, ParticipationLog] | None = None


def _identities(
    config: SecAggConfig, ids: Sequence[int], given: Identities | None
) -> Identities | None:
    if config.mode is SecurityMode.SEMI_HONEST:
        if given is not None:
            raise ConfigError("identities are only used in hardened mode")
        return None
    if given is not None:
        return given
    # A simulation without real institutions: fresh keys, and the model
    # "sent" is the public context (callers with a model pass Identities).
    consortium, keys = make_consortium(ids)
    model_hash = hashlib.sha256(config.context).digest()
    return Identities(consortium=consortium, keys=keys, model_hash=model_hash)


def _parties(
    config: SecAggConfig,
    ids: Sequence[int],
    ident: Identities | None,
    **kw: Any,
) -> tuple[dict[int, SecAggClient], SecAggServer]:
    # ``kw``: policy, entropy, device and backend of every client.
    device, backend = kw["device"], kw["backend"]
    if ident is None:
        clients = {i: SecAggClient(config, i, **kw) for i in ids}
        return clients, SecAggServer(config, device=device, backend=backend)
    logs = ident.participation or {i: MemoryParticipationLog() for i in ids}
    if set(ids) - set(logs):
        raise ConfigError(
            f"identities.participation has no log for clients "
            f"{sorted(set(ids) - set(logs))}"
        )
    clients = {
        i: SecAggClient(
            config,
            i,
            consortium=ident.consortium,
            identity=ident.keys[i],
            model_hash=ident.model_hash,
            participation=logs[i],
            **kw,
        )
        for i in ids
    }
    server = SecAggServer(
        config, device=device, backend=backend,
        consortium=ident.consortium, model_hash=ident.model_hash,
    )  # fmt: skip
    return clients, server


def _exchange(
    clients: Mapping[int, SecAggClient],
    server: SecAggServer,
    quantized: Mapping[int, QuantizedInput],
    drops: Mapping[int, Round],
    hardened: bool,
) -> tuple[dict[int, int], dict[int, int]]:
    # Every round through the wire format; returns bytes sent and received.
    sent = dict.fromkeys(clients, 0)
    received = dict.fromkeys(clients, 0)

    def alive(i: int, rnd: Round) -> bool:
        return i not in drops or rnd < drops[i]

    def deliver(i: int, msg: bytes) -> None:
        sent[i] += len(msg)
        server.receive(i, msg)

    for i, c in clients.items():
        if alive(i, Round.ADVERTISE_KEYS):
            deliver(i, c.advertise_keys())
    steps: list[tuple[Round, Callable[[int, bytes], bytes]]] = [
        (Round.SHARE_KEYS, lambda i, m: clients[i].share_keys(m)),
        (Round.MASKED_INPUT, lambda i, m: clients[i].masked_input(m, quantized[i])),
        (Round.UNMASKING, lambda i, m: clients[i].unmask(m)),
    ]
    if hardened:
        steps.insert(
            2, (Round.CONSISTENCY_CHECK, lambda i, m: clients[i].consistency_check(m))
        )
    for rnd, step in steps:
        for i, msg in server.broadcast().items():
            if alive(i, rnd):
                received[i] += len(msg)
                deliver(i, step(i, msg))
    return sent, received


def run_quantized_session(
    quantized: Mapping[int, QuantizedInput],
    config: SecAggConfig,
    *,
    drop: Mapping[int, Round] | None = None,
    policy: ClientPolicy | None = None,
    entropy: Callable[[int], bytes] = os.urandom,
    device: torch.device | str = "cpu",
    identities: Identities | None = None,
    backend: RingBackend | None = None,
) -> SessionResult:
    """Run a session over already-quantised inputs (see :func:`run_session`)."""
    if len(quantized) > config.num_clients:
        raise InvalidInput(
            f"{len(quantized)} inputs for a cohort of {config.num_clients}"
        )
    ident = _identities(config, sorted(quantized), identities)
    drops = {i: _vanish_round(r, ident is not None) for i, r in (drop or {}).items()}
    unknown = set(drops) - set(quantized)
    if unknown:
        raise InvalidInput(f"drop names unknown clients: {sorted(unknown)}")
    clients, server = _parties(
        config, sorted(quantized), ident,
        policy=policy, entropy=entropy, device=device, backend=backend,
    )  # fmt: skip
    sent, received = _exchange(clients, server, quantized, drops, ident is not None)
    agg = server.unmask()
    return SessionResult(
        weighted_sum=agg.weighted_sum,
        total_weight=agg.total_weight,
        mean=agg.weighted_sum / agg.total_weight,
        survivors=agg.survivors,
        responders=agg.responders,
        bytes_sent=sent,
        bytes_received=received,
        clipped=agg.clipped,
        ring_sum=agg.ring_sum,
    )


def run_session(
    inputs: Sequence[Vector] | Mapping[int, Vector],
    weights: Sequence[int] | Mapping[int, int],
    config: SecAggConfig,
    *,
    drop: Mapping[int, Round] | None = None,
    policy: ClientPolicy | None = None,
    device: torch.device | str = "cpu",
    identities: Identities | None = None,
    backend: RingBackend | None = None,
) -> SessionResult:
    """Run one complete session in process and return the decoded sum.

    ``inputs`` are 1-D float vectors of length ``config.vector_length`` (a
    sequence gives ids 0..n-1, a mapping names them); ``weights`` are integer
    example counts with the same ids, each at most ``config.max_weight``;
    ``drop`` maps a client id to the :class:`Round` before which it vanishes
    (semi-honest sessions have no ConsistencyCheck, so ``CONSISTENCY_CHECK``
    acts as ``UNMASKING``).  A client that vanishes after ``MASKED_INPUT``
    has already sent its masked input and stays in the sum.  A hardened
    ``config`` uses ``identities`` (consortium, signing keys, model hash), or
    fresh ones from :func:`~secagg.identity.make_consortium` with the SHA-256
    of ``config.context`` as the model hash when none are given.  Raises
    :class:`~secagg.errors.TooFewSurvivors` when fewer than ``threshold``
    clients remain at any round.  ``policy`` is every client's own
    :class:`ClientPolicy` (default: threshold at least half the cohort).
    ``device`` and ``backend`` (:func:`secagg.backend.select_ring`) choose
    the ring quantisation, masking and summation run on.
    """
    xs, ws = _by_id(inputs), _by_id(weights)
    if set(xs) != set(ws):
        raise InvalidInput("inputs and weights must name the same clients")
    for i in sorted(ws):
        check_weight(ws[i], config)
    drops = drop or {}
    quantized = {
        i: quantize_input(xs[i], ws[i], config, device=device, backend=backend)
        for i in sorted(xs)
        if i not in drops or drops[i] > Round.MASKED_INPUT
    }
    # Clients that vanish before MaskedInput never quantise; they still take
    # part in the earlier rounds.
    ring = select_ring(config.ring_bits, device, backend)
    placeholder = QuantizedInput(
        values=ring.zeros(config.encoded_length),
        weight=0,
        clipped=0,
        bits=config.ring_bits,
    )
    for i in xs:
        quantized.setdefault(i, placeholder)
    return run_quantized_session(
        quantized,
        config,
        drop=drops,
        policy=policy,
        device=device,
        identities=identities,
        backend=backend,
    )
