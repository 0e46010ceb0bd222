"""Shared drivers for the secagg tests: build a session up to a given round."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import (
    ClientPolicy,
    Consortium,
    MemoryParticipationLog,
    ParticipationLog,
    QuantizedInput,
    Round,
    SecAggClient,
    SecAggConfig,
    SecAggError,
    SecAggServer,
    SecurityMode,
    make_consortium,
    quantize_input,
)

#: RFC 8439 Appendix A.1 block vectors: (key, nonce, counter, first 16 bytes),
#: shared by the tests of every ChaCha20 back end.
RFC8439_A1 = [
    (bytes(32), bytes(12), 0, "76b8e0ada0f13d90405d6ae55386bd28"),
    (bytes(32), bytes(12), 1, "9f07e7be5551387a98ba977c732d080d"),
    (bytes(31) + b"\x01", bytes(12), 1, "3aeb5224ecf849929b9d828db1ced4dd"),
    (b"\x00\xff" + bytes(30), bytes(12), 2, "72d54dfbf12ec44b362692df94137f32"),
    (bytes(32), bytes(11) + b"\x02", 0, "c2c64d378cd536374ae204b9ef933fcd"),
]

LENIENT = ClientPolicy(min_cohort=1, min_threshold=1, min_threshold_fraction=0.0)
#: The model hash every honest party of a hardened test session holds.
MODEL = hashlib.sha256(b"the model the server announced").digest()


def config(n: int = 4, t: int = 3, d: int = 8, **kw: object) -> SecAggConfig:
    """A small configuration with weights up to 15."""
    kw.setdefault("max_weight", 15)
    return SecAggConfig(num_clients=n, threshold=t, vector_length=d, **kw)  # type: ignore[arg-type]


def quantized(cfg: SecAggConfig, seed: int = 0) -> QuantizedInput:
    """A deterministic input vector (test data only, not randomness for masks)."""
    x = np.linspace(-0.5, 0.5, cfg.vector_length) + 0.01 * seed
    return quantize_input(x, 1 + seed % cfg.max_weight, cfg)


@dataclass
class Drive:
    """Clients and server of one session, stopped before ``round``."""

    cfg: SecAggConfig
    clients: dict[int, SecAggClient]
    server: SecAggServer
    requests: dict[int, bytes]  # server -> client messages for ``round``
    # Hardened mode only: the registry and every client's identity key.
    consortium: Consortium | None = None
    keys: dict[int, Ed25519PrivateKey] = field(default_factory=dict)


def _client(
    cfg: SecAggConfig,
    i: int,
    policy: ClientPolicy,
    consortium: Consortium | None,
    keys: dict[int, Ed25519PrivateKey],
    model_hash: bytes,
    log: ParticipationLog | None = None,
) -> SecAggClient:
    if consortium is None:
        return SecAggClient(cfg, i, policy=policy)
    return SecAggClient(
        cfg,
        i,
        policy=policy,
        consortium=consortium,
        identity=keys[i],
        model_hash=model_hash,
        participation=log or MemoryParticipationLog(),
    )


def drive(
    cfg: SecAggConfig,
    until: Round,
    *,
    absent: dict[int, Round] | None = None,
    policy: ClientPolicy = LENIENT,
    roster: tuple[Consortium, dict[int, Ed25519PrivateKey]] | None = None,
    logs: Mapping[int, ParticipationLog] | None = None,
    cohort: Sequence[int] | None = None,
) -> Drive:
    """Run every round before ``until``; ``absent`` clients vanish before a round.

    A hardened ``cfg`` gets a fresh consortium of ids 0..n-1 (or ``roster``),
    every party holding the model hash :data:`MODEL`, a participation log
    (fresh, or ``logs[i]``), and the ConsistencyCheck round.  ``cohort``
    names the clients (default 0..n-1).
    """
    absent = absent or {}
    hardened = cfg.mode is SecurityMode.HARDENED
    ids = list(cohort) if cohort is not None else list(range(cfg.num_clients))
    consortium: Consortium | None = None
    keys: dict[int, Ed25519PrivateKey] = {}
    if hardened:
        consortium, keys = roster or make_consortium(range(cfg.num_clients))
    logs = logs or {}
    clients = {
        i: _client(cfg, i, policy, consortium, keys, MODEL, logs.get(i)) for i in ids
    }
    server = SecAggServer(
        cfg, consortium=consortium, model_hash=MODEL if hardened else None
    )

    def alive(i: int, rnd: Round) -> bool:
        return i not in absent or rnd < absent[i]

    for i, c in clients.items():
        if alive(i, Round.ADVERTISE_KEYS):
            server.receive(i, c.advertise_keys())
    requests = server.broadcast()
    rounds = [Round.SHARE_KEYS, Round.MASKED_INPUT, Round.UNMASKING]
    if hardened:
        rounds.insert(2, Round.CONSISTENCY_CHECK)
    for rnd in rounds:
        if rnd >= until:
            break
        for i, msg in requests.items():
            if not alive(i, rnd):
                continue
            c = clients[i]
            if rnd is Round.SHARE_KEYS:
                out = c.share_keys(msg)
            elif rnd is Round.MASKED_INPUT:
                out = c.masked_input(msg, quantized(cfg, i))
            elif rnd is Round.CONSISTENCY_CHECK:
                out = c.consistency_check(msg)
            else:
                out = c.unmask(msg)
            server.receive(i, out)
        requests = server.broadcast() if rnd < Round.UNMASKING else {}
    return Drive(
        cfg=cfg,
        clients=clients,
        server=server,
        requests=requests,
        consortium=consortium,
        keys=keys,
    )


def refuses(
    client: SecAggClient,
    call: Callable[[], bytes],
    error: type[SecAggError],
    message: str,
) -> None:
    """`call` raises `error` matching `message` and the client is unchanged."""
    before = client._state
    with pytest.raises(error, match=message):
        call()
    assert client._state is before
    assert client.holds_secrets
