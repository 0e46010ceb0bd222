"""The durable participation log: one advert per nonce, one input per model."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from secagg import AlreadyContributed, ConfigError, ReplayedSession
from secagg.participation import (
    FileParticipationLog,
    MemoryParticipationLog,
    ParticipationLog,
)

MODEL = bytes.fromhex("11" * 32)
NONCE = bytes.fromhex("22" * 32)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "file"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> ParticipationLog:
    if request.param == "memory":
        return MemoryParticipationLog()
    return FileParticipationLog(tmp_path / "log")


def test_each_fact_is_claimed_once(log: ParticipationLog) -> None:
    log.check_model(MODEL)
    log.claim_model(MODEL)
    with pytest.raises(AlreadyContributed, match="already contributed to model 1111"):
        log.claim_model(MODEL)
    with pytest.raises(AlreadyContributed, match="at most once per model"):
        log.check_model(MODEL)
    log.claim_nonce(NONCE)
    with pytest.raises(ReplayedSession, match="advertised keys for session nonce 2222"):
        log.claim_nonce(NONCE)
    # The two kinds of fact never collide, and other values stay free.
    log.claim_nonce(MODEL)
    log.claim_model(NONCE)


def test_bad_values_and_paths_are_refused(tmp_path: Path) -> None:
    log = MemoryParticipationLog()
    with pytest.raises(ConfigError, match="model hash must be 32 bytes"):
        log.claim_model(b"short")
    with pytest.raises(ConfigError, match="session nonce must be 32 bytes"):
        log.claim_nonce("22" * 32)  # type: ignore[arg-type]
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"cannot use .* as a participation log"):
        FileParticipationLog(blocker / "log")
    with pytest.raises(ConfigError, match="is not a directory"):
        FileParticipationLog(blocker)


def test_the_claim_is_fsynced_with_its_directory_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = FileParticipationLog(tmp_path)
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    log.claim_model(MODEL)
    record = tmp_path / f"model-{MODEL.hex()}"
    assert synced == [str(record), str(tmp_path)]
    assert record.read_text() == f"model {MODEL.hex()}\n"


_CHILD = """
import os, signal, sys
from secagg.participation import FileParticipationLog
FileParticipationLog(sys.argv[1]).claim_model(bytes.fromhex(sys.argv[2]))
os.kill(os.getpid(), signal.SIGKILL)  # no clean exit, no flush at exit
"""


def test_a_claim_survives_kill_9_and_a_restart(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path), MODEL.hex()],
        env=env,
        capture_output=True,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    restarted = FileParticipationLog(tmp_path)
    with pytest.raises(AlreadyContributed):
        restarted.claim_model(MODEL)


def _race(directory: str, barrier: Any, results: Any) -> None:
    log = FileParticipationLog(directory)
    barrier.wait()
    try:
        log.claim_model(MODEL)
        results.put("won")
    except AlreadyContributed:
        results.put("refused")


def test_concurrent_claims_for_one_model_have_exactly_one_winner(
    tmp_path: Path,
) -> None:
    # Forked processes (no re-import) released together by a barrier.
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    racers = [
        ctx.Process(target=_race, args=(str(tmp_path), barrier, results))
        for _ in range(4)
    ]
    for p in racers:
        p.start()
    for p in racers:
        p.join(30)
    assert sorted(results.get(timeout=5) for _ in racers) == [
        "refused",
        "refused",
        "refused",
        "won",
    ]
