"""Ledger durability (kill -9, restart) and tamper detection naming the line."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import dp
from tests.dp.tinykit import rechain, tiny_dataset, write_ledger

REPO = Path(__file__).resolve().parents[2]


def _spawn(ledger: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.dp.kill9_child", str(ledger)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.time()))
    if not ready:
        proc.kill()
        pytest.fail("child produced no output in time")
    line = proc.stdout.readline()
    if not line:
        assert proc.stderr is not None
        pytest.fail(f"child exited early: {proc.stderr.read()[-2000:]}")
    return line


def _run_and_kill(ledger: Path, rng: random.Random) -> tuple[float, dict[int, float]]:
    """Start the child, let it train a random while, SIGKILL it mid-loop."""
    proc = _spawn(ledger)
    deadline = time.time() + 120
    first = _read_line(proc, deadline).split()
    assert first[0] == "resumed"
    resumed = float(first[1])
    reported: dict[int, float] = {}
    # At least one round, then a random moment (between or inside steps).
    wanted = rng.randint(1, 4)
    while len(reported) < wanted:
        _, r, eps = _read_line(proc, deadline).split()
        reported[int(r)] = float(eps)
    time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout is not None
    # Lines the child flushed before it died are reports too.
    for line in proc.stdout.read().splitlines():
        _, r, eps = line.split()
        reported[int(r)] = float(eps)
    return resumed, reported


def test_kill_9_never_loses_a_charge_and_restart_resumes(tmp_path: Path) -> None:
    ledger = tmp_path / "crash.jsonl"
    rng = random.Random()  # the kill moments only; nothing private
    resumed0, first = _run_and_kill(ledger, rng)
    assert resumed0 == 0.0
    entries = dp.read_ledger(ledger)  # verifies: no torn or broken line
    charged = {e.round: e.epsilon for e in entries}
    for r, eps in first.items():
        assert charged[r] == eps, f"round {r} was reported but not charged"
    # The restart resumes from the ledger, with the same ε, never from 0.
    resumed1, second = _run_and_kill(ledger, rng)
    assert resumed1 == entries[-1].epsilon > 0
    # It continues after the last charged round (a charged round that was
    # killed before reporting stays charged: over-counting is the safe side).
    assert min(second) == entries[-1].round + 1
    assert second[min(second)] > resumed1
    entries = dp.read_ledger(ledger)
    charged = {e.round: e.epsilon for e in entries}
    for r, eps in {**first, **second}.items():
        assert charged[r] == eps
    # The parent's own reopened client agrees, and ε is the composition.
    data = tiny_dataset()
    cfg = dp.DPConfig(
        delta=1e-3,
        max_grad_norm=1.0,
        epsilon_budget=1e6,
        planned_rounds=3,
        batch_size=10,
        noise_multiplier=1.0,
    )
    client = dp.PrivateClient("crash", len(data), cfg, ledger)
    assert client.epsilon_spent() == entries[-1].epsilon > 0
    assert client.epsilon_spent() == pytest.approx(
        dp.epsilon_from_entries(entries, 1e-3, dp.Accountant.RDP), rel=1e-9
    )
    assert [e.seq for e in entries] == list(range(len(entries)))


# --- tampering ------------------------------------------------------------


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _edit_field(lines: list[bytes]) -> list[bytes]:
    obj = json.loads(lines[1])
    obj["epsilon"] = obj["epsilon"] / 2  # canonical bytes, stale hash
    return [lines[0], dp.ledger_format.canonical_json(obj) + b"\n", *lines[2:]]


def _non_canonical(lines: list[bytes]) -> list[bytes]:
    obj = json.loads(lines[2])  # same content, same hash, spaces added
    return [*lines[:2], json.dumps(obj, sort_keys=True).encode() + b"\n", *lines[3:]]


def _relinked(lines: list[bytes]) -> list[bytes]:
    obj = json.loads(lines[1])
    obj["epsilon"] = obj["epsilon"] / 2
    del obj["entry_sha256"]
    obj["entry_sha256"] = dp.ledger_format._sha256_hex(
        dp.ledger_format.canonical_json(obj)
    )
    return [lines[0], dp.ledger_format.canonical_json(obj) + b"\n", *lines[2:]]


TAMPERS: list[tuple[str, Callable[[list[bytes]], list[bytes]], int, str]] = [
    ("edited field", _edit_field, 2, "a field was edited"),
    ("deleted line", lambda ls: [ls[0], *ls[2:]], 2, "seq is 2, expected 1"),
    ("reordered", lambda ls: [ls[0], ls[2], ls[1], ls[3]], 2, "seq is 2, expected 1"),
    ("duplicated", lambda ls: [*ls[:2], ls[1], *ls[2:]], 3, "seq is 1, expected 2"),
    ("torn last line", lambda ls: [*ls[:3], ls[3][:40]], 4, "torn last line"),
    ("non-canonical", _non_canonical, 3, "not in canonical form"),
    ("hash re-computed", _relinked, 3, "hash chain broken"),
    ("garbage", lambda ls: [*ls[:3], b"{not json\n"], 4, "unreadable entry"),
]


@pytest.mark.parametrize(
    ("tamper", "line", "words"),
    [(t[1], t[2], t[3]) for t in TAMPERS],
    ids=[t[0] for t in TAMPERS],
)
def test_tampered_ledger_is_refused_naming_the_line(
    tmp_path: Path,
    tamper: Callable[[list[bytes]], list[bytes]],
    line: int,
    words: str,
) -> None:
    path = tmp_path / "c1.jsonl"
    write_ledger(path, rounds=4, delta=1e-3)
    path.write_bytes(b"".join(tamper(_lines(path))))
    for reader in (dp.read_ledger, dp.PrivacyLedger.open):
        with pytest.raises(dp.LedgerCorruptedError) as info:
            reader(path)
        assert info.value.line == line
        assert f"line {line}: " in str(info.value)
        assert words in str(info.value)
    # A client refuses to start on it, rather than resetting its budget.
    with pytest.raises(dp.LedgerCorruptedError, match=f"line {line}: "):
        dp.PrivateClient(
            "c1",
            60,
            dp.DPConfig(
                delta=1e-3,
                max_grad_norm=1.0,
                epsilon_budget=50.0,
                planned_rounds=3,
                batch_size=10,
                noise_multiplier=1.0,
            ),
            path,
        )


def test_overflowing_number_is_an_unreadable_line(tmp_path: Path) -> None:
    path = tmp_path / "c1.jsonl"
    write_ledger(path, rounds=2)
    lines = _lines(path)
    bad = lines[1].replace(b'"epsilon_budget":50.0', b'"epsilon_budget":' + b"9" * 400)
    path.write_bytes(lines[0] + bad)
    with pytest.raises(dp.LedgerCorruptedError, match="line 2: unreadable entry"):
        dp.read_ledger(path)


def test_rechained_ledger_with_a_foreign_client_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c1.jsonl"
    entries = list(write_ledger(path, rounds=3))
    entries[2] = dataclasses.replace(entries[2], client_id="intruder")
    path.write_bytes(rechain(entries))
    with pytest.raises(dp.LedgerCorruptedError, match="line 3: client_id"):
        dp.read_ledger(path)


def test_a_valid_ledger_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "c1.jsonl"
    written = write_ledger(path, rounds=3)
    assert dp.read_ledger(path) == written
    assert path.read_bytes() == rechain(list(written))
    ledger = dp.PrivacyLedger.open(path)
    assert ledger.head_sha256 == written[-1].entry_sha256
    assert ledger.epsilon_spent == written[-1].epsilon
