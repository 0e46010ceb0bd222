"""Shared drivers for the secagg tests: build a session up to a given round."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from secagg import (
    ClientPolicy,
    QuantizedInput,
    Round,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    quantize_input,
)

LENIENT = ClientPolicy(min_cohort=1, min_threshold=1, min_threshold_fraction=0.0)


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


def drive(
    cfg: SecAggConfig,
    until: Round,
    *,
    absent: dict[int, Round] | None = None,
    policy: ClientPolicy = LENIENT,
) -> Drive:
    """Run every round before ``until``; ``absent`` clients vanish before a round."""
    absent = absent or {}
    clients = {i: SecAggClient(cfg, i, policy=policy) for i in range(cfg.num_clients)}
    server = SecAggServer(cfg)

    def alive(i: int, rnd: Round) -> bool:
        return i not in absent or rnd < absent[i]

    for i, c in clients.items():
        if alive(i, Round.ADVERTISE_KEYS):
            server.receive(i, c.advertise_keys())
    requests = server.broadcast()
    for rnd in (Round.SHARE_KEYS, Round.MASKED_INPUT, Round.UNMASKING):
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
            else:
                out = c.unmask(msg)
            server.receive(i, out)
        requests = server.broadcast() if rnd < Round.UNMASKING else {}
    return Drive(cfg=cfg, clients=clients, server=server, requests=requests)
