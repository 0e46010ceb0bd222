"""Attacks across sessions: differencing two sums on one model, and replayed
adverts.  Each is refused with a named error by hardened clients whose
participation log survives restarts; the contrast shows what the coordinator
learns where no log is kept (semi-honest mode)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

from secagg import (
    AlreadyContributed,
    FileParticipationLog,
    Identities,
    InvalidSignature,
    MemoryParticipationLog,
    ParticipationLog,
    ReplayedSession,
    Round,
    SecAggConfig,
    SecAggServer,
    SecurityMode,
    SessionResult,
    make_consortium,
    run_session,
)
from secagg.messages import MaskedInput
from secagg.signed_messages import (
    SignedAdvertiseKeys,
    SignedKeyDirectory,
)
from tests.secagg.conftest import MODEL, config, drive, quantized, refuses

HARD = SecurityMode.HARDENED
D = 6


def _inputs(ids: list[int], cfg: SecAggConfig) -> dict[int, torch.Tensor]:
    # Values on the quantisation grid, so every sum below is exact.
    grid = np.arange(D, dtype=np.float64) - D // 2
    return {i: torch.from_numpy((grid + 3 * i) / cfg.scale) for i in ids}


WEIGHTS = {0: 7, 1: 2, 2: 3, 3: 4}
ROSTER = make_consortium(range(4))


def _session(
    ids: list[int], mode: SecurityMode, logs: Mapping[int, ParticipationLog] | None
) -> SessionResult:
    """One session of cohort ``ids`` on :data:`MODEL` (t = n: one colluder
    assumed, so 2t > n + 1 for n = 3 and 4)."""
    cfg = config(n=len(ids), t=3, d=D, mode=mode)
    ident = None
    if mode is HARD:
        consortium, keys = ROSTER
        ident = Identities(
            consortium=consortium,
            keys={i: keys[i] for i in ids},
            model_hash=MODEL,
            participation={i: (logs or {})[i] for i in ids},
        )
    weights = {i: WEIGHTS[i] for i in ids}
    return run_session(_inputs(ids, cfg), weights, cfg, identities=ident)


def test_contrast_two_sessions_on_one_model_give_a_client_away() -> None:
    both = _session([0, 1, 2, 3], SecurityMode.SEMI_HONEST, None)
    rest = _session([1, 2, 3], SecurityMode.SEMI_HONEST, None)
    assert both.total_weight - rest.total_weight == WEIGHTS[0]
    x0 = _inputs([0], config(n=4, t=3, d=D))[0]
    diff = both.weighted_sum - rest.weighted_sum
    assert torch.allclose(diff, WEIGHTS[0] * x0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "file"])
def test_a_second_contribution_to_one_model_is_refused(
    durable: bool, tmp_path: Path
) -> None:
    def logs() -> dict[int, ParticipationLog]:
        if durable:
            return {i: FileParticipationLog(tmp_path / str(i)) for i in range(4)}
        return {i: MemoryParticipationLog() for i in range(4)}

    first = logs()
    assert _session([0, 1, 2, 3], HARD, first).total_weight == sum(WEIGHTS.values())
    # A durable log is reopened, as after a restart; a memory one is kept.
    second = logs() if durable else first
    with pytest.raises(
        AlreadyContributed,
        match=f"this client already contributed to model {MODEL.hex()[:16]}",
    ):
        _session([1, 2, 3], HARD, second)


def test_two_concurrent_sessions_on_one_model_get_one_contribution() -> None:
    # Client 1 joins two sessions on the same model at once; the second one
    # to reach MaskedInput is refused there, before anything leaves.
    consortium, keys = make_consortium(range(4))
    log = MemoryParticipationLog()
    cfg_a = config(n=4, t=3, d=D, mode=HARD)
    cfg_b = config(n=4, t=3, d=D, mode=HARD)
    a = drive(cfg_a, Round.MASKED_INPUT, roster=(consortium, keys), logs={1: log})
    b = drive(cfg_b, Round.MASKED_INPUT, roster=(consortium, keys), logs={1: log})
    out = a.clients[1].masked_input(a.requests[1], quantized(cfg_a, 1))
    assert MaskedInput.from_bytes(out).sender == 1
    client = b.clients[1]
    refuses(
        client,
        lambda: client.masked_input(b.requests[1], quantized(cfg_b, 1)),
        AlreadyContributed,
        "already contributed to model",
    )


def test_a_replayed_advert_is_refused() -> None:
    consortium, keys = make_consortium(range(4))
    logs = {i: MemoryParticipationLog() for i in range(4)}
    cfg1 = config(n=4, t=3, mode=HARD)
    first = drive(cfg1, Round.SHARE_KEYS, roster=(consortium, keys), logs=logs)
    stale = next(
        e
        for e in SignedKeyDirectory.from_bytes(first.requests[0]).entries
        if e.client_id == 1
    )
    # Same parameters and model, a fresh nonce: the old advert does not verify.
    cfg2 = dataclasses.replace(cfg1, session_nonce=os.urandom(32))
    second = drive(cfg2, Round.SHARE_KEYS, roster=(consortium, keys))
    entries = [
        stale if e.client_id == 1 else e
        for e in SignedKeyDirectory.from_bytes(second.requests[0]).entries
    ]
    forged = SignedKeyDirectory(entries=tuple(entries)).to_bytes()
    target = second.clients[0]
    refuses(
        target,
        lambda: target.share_keys(forged),
        InvalidSignature,
        "signature of client 1 does not verify",
    )
    replayed = SignedAdvertiseKeys(
        sender=1, c_pk=stale.c_pk, s_pk=stale.s_pk, signature=stale.signature
    )
    fresh_server = SecAggServer(cfg2, consortium=consortium, model_hash=MODEL)
    with pytest.raises(InvalidSignature, match="signature of client 1 does not"):
        fresh_server.receive(1, replayed.to_bytes())
    # Reusing the old nonce instead: the members who advertised for it refuse
    # to sign keys for it again, so no second advert under it exists.
    with pytest.raises(ReplayedSession, match="already advertised keys for session"):
        drive(cfg1, Round.SHARE_KEYS, roster=(consortium, keys), logs=logs)
