"""Ledger: round trip, canonical form, tamper detection, check-then-commit, kill -9."""

from __future__ import annotations

import dataclasses
import hashlib
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
from dp.ledger_format import GENESIS_SHA256, canonical_json
from tests.dp import kit

REPO = Path(__file__).resolve().parents[2]
RUN = dp.StepRun(1.1, 0.01, 100)
R1 = dp.Neighbouring.REPLACE_ONE


def _charge(ledger: dp.PrivacyLedger, round_idx: int, **kw: object) -> None:
    """Append the next charge of the ``three_rounds`` ledger's schedule."""
    eps = dp.epsilon_for_history(
        [*ledger.history, RUN], 1e-5, dp.Accountant.PLD, neighbouring=R1
    )
    args: dict[str, object] = {
        "client_id": "c1",
        "round_idx": round_idx,
        "run": RUN,
        "delta": 1e-5,
        "accountant": dp.Accountant.PLD,
        "neighbouring": R1,
        "epsilon": eps,
        "epsilon_budget": 5.0,
        "clip_bound": 1.0,
    }
    args.update(kw)
    ledger.append(**args)  # type: ignore[arg-type]


def test_a_valid_ledger_round_trips_and_chains(three_rounds: Path) -> None:
    ledger = dp.PrivacyLedger.open(three_rounds)
    entries = ledger.entries
    assert [e.seq for e in entries] == [0, 1, 2]
    assert [e.round for e in entries] == [0, 1, 2]
    assert entries[0].prev_sha256 == GENESIS_SHA256
    assert entries[1].prev_sha256 == entries[0].entry_sha256
    assert ledger.head == dp.LedgerHead(2, entries[2].entry_sha256)
    assert ledger.head_sha256 == entries[2].entry_sha256
    assert all(e.version == 2 and e.neighbouring is R1 for e in entries)
    assert dp.read_ledger(three_rounds) == entries
    assert three_rounds.read_bytes() == kit.rechain(list(entries))
    assert ledger.epsilon_spent == entries[-1].epsilon
    assert ledger.epsilon_spent == dp.epsilon_from_entries(entries)
    assert ledger.epsilon_spent == dp.epsilon_for_history(
        [dp.StepRun(1.1, 0.01, 300)], 1e-5, dp.Accountant.PLD, neighbouring=R1
    )
    ledger.verify()


def test_lines_are_canonical_json_with_self_hash(three_rounds: Path) -> None:
    for raw in kit.ledger_lines(three_rounds):
        obj = json.loads(raw)
        claimed = obj.pop("entry_sha256")
        assert hashlib.sha256(canonical_json(obj)).hexdigest() == claimed
        assert canonical_json({**obj, "entry_sha256": claimed}) + b"\n" == raw


# --- tampering ------------------------------------------------------------


def _edit_field(lines: list[bytes]) -> list[bytes]:
    obj = json.loads(lines[1])
    obj["epsilon"] = obj["epsilon"] / 2  # canonical bytes, stale hash
    return [lines[0], canonical_json(obj) + b"\n", *lines[2:]]


def _non_canonical(lines: list[bytes]) -> list[bytes]:
    obj = json.loads(lines[2])  # same content, same hash, spaces added
    return [*lines[:2], json.dumps(obj, sort_keys=True).encode() + b"\n", *lines[3:]]


def _relinked(lines: list[bytes]) -> list[bytes]:
    obj = json.loads(lines[1])
    obj["epsilon"] = obj["epsilon"] / 2
    del obj["entry_sha256"]
    obj["entry_sha256"] = hashlib.sha256(canonical_json(obj)).hexdigest()
    return [lines[0], canonical_json(obj) + b"\n", *lines[2:]]


TAMPERS: list[tuple[str, Callable[[list[bytes]], list[bytes]], int, str]] = [
    ("edited field", _edit_field, 2, "a field was edited"),
    ("deleted line", lambda ls: [ls[0], *ls[2:]], 2, "seq is 2, expected 1"),
    ("reordered", lambda ls: [ls[0], ls[2], ls[1], ls[3]], 2, "seq is 2, expected 1"),
    ("duplicated", lambda ls: [*ls[:2], ls[1], *ls[2:]], 3, "seq is 1, expected 2"),
    ("torn last line", lambda ls: [*ls[:3], ls[3][:40]], 4, "torn last line"),
    ("non-canonical", _non_canonical, 3, "not in canonical form"),
    ("hash re-computed", _relinked, 3, "hash chain broken"),
    ("garbage", lambda ls: [*ls[:3], b"{not json\n"], 4, "unreadable entry"),
    ("garbage inside", lambda ls: [ls[0], b"{not json\n", *ls[1:]], 2, "unreadable"),
]


@pytest.mark.parametrize(
    ("tamper", "line", "words"),
    [(t[1], t[2], t[3]) for t in TAMPERS],
    ids=[t[0] for t in TAMPERS],
)
def test_tampered_ledger_is_refused_naming_the_line(
    ledger_path: Path,
    tamper: Callable[[list[bytes]], list[bytes]],
    line: int,
    words: str,
) -> None:
    kit.write_ledger(ledger_path, rounds=4, delta=kit.DELTA)
    ledger_path.write_bytes(b"".join(tamper(kit.ledger_lines(ledger_path))))
    for reader in (dp.read_ledger, dp.PrivacyLedger.open):
        with pytest.raises(dp.LedgerCorruptedError) as info:
            reader(ledger_path)
        assert info.value.line == line
        assert f"line {line}: " in str(info.value)
        assert words in str(info.value)
    # A client refuses to start on it, rather than resetting its budget.
    with pytest.raises(dp.LedgerCorruptedError, match=f"line {line}: "):
        kit.client(ledger_path)


def test_overflowing_number_is_an_unreadable_line(ledger_path: Path) -> None:
    kit.write_ledger(ledger_path, rounds=2)
    lines = kit.ledger_lines(ledger_path)
    bad = lines[1].replace(b'"epsilon_budget":50.0', b'"epsilon_budget":' + b"9" * 400)
    ledger_path.write_bytes(lines[0] + bad)
    with pytest.raises(dp.LedgerCorruptedError, match="line 2: unreadable entry"):
        dp.read_ledger(ledger_path)


def test_rechained_ledger_with_a_foreign_client_is_refused(ledger_path: Path) -> None:
    entries = list(kit.write_ledger(ledger_path, rounds=3))
    entries[2] = dataclasses.replace(entries[2], client_id="intruder")
    ledger_path.write_bytes(kit.rechain(entries))
    with pytest.raises(dp.LedgerCorruptedError, match="line 3: client_id"):
        dp.read_ledger(ledger_path)


# --- check, then commit ---------------------------------------------------


def test_a_charge_for_another_client_is_refused(
    three_rounds: Path, tmp_path: Path
) -> None:
    with pytest.raises(dp.LedgerMismatchError, match=r"client_id='c1'.*client_id='c2'"):
        _charge(dp.PrivacyLedger.open(three_rounds), 3, client_id="c2")


def test_over_budget_charge_leaves_the_bytes_unchanged(three_rounds: Path) -> None:
    before = three_rounds.read_bytes()
    ledger = dp.PrivacyLedger.open(three_rounds)
    with pytest.raises(dp.BudgetExceeded, match=r"above its budget ε=1\.0000"):
        _charge(ledger, 3, epsilon_budget=1.0)
    assert three_rounds.read_bytes() == before
    assert len(ledger.entries) == 3


def test_round_going_backwards_is_refused(three_rounds: Path) -> None:
    before = three_rounds.read_bytes()
    with pytest.raises(
        dp.LedgerError, match="round_idx must be >= the last charged round"
    ):
        _charge(dp.PrivacyLedger.open(three_rounds), 1)
    assert three_rounds.read_bytes() == before


def test_invalid_entry_is_refused_before_writing(ledger_path: Path) -> None:
    ledger = dp.PrivacyLedger.open(ledger_path, missing_ok=True)
    with pytest.raises(
        dp.LedgerError, match="refusing to write an invalid entry: delta must be in"
    ):
        _charge(ledger, 0, delta=1.5)
    assert not ledger_path.exists()


def test_concurrent_writer_is_detected(three_rounds: Path) -> None:
    a = dp.PrivacyLedger.open(three_rounds)
    b = dp.PrivacyLedger.open(three_rounds)
    _charge(b, 3)
    with pytest.raises(dp.LedgerError, match="changed on disk since it was read"):
        _charge(a, 4)
    with pytest.raises(dp.LedgerError, match="changed on disk"):
        a.verify()
    assert len(dp.read_ledger(three_rounds)) == 4


def test_missing_ledger(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(dp.LedgerNotFoundError, match=f"ledger {path} not found"):
        dp.PrivacyLedger.open(path)
    empty = dp.PrivacyLedger.open(path, missing_ok=True)
    assert empty.entries == () and empty.epsilon_spent == 0.0
    assert not path.exists()


# --- kill -9 ----------------------------------------------------------------


def _spawn(ledger: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.dp.kit", "kill9-child", str(ledger)],
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
    client = kit.client(ledger, kit.config(epsilon_budget=1e6), client_id="crash")
    assert client.epsilon_spent() == entries[-1].epsilon > 0
    assert client.epsilon_spent() == pytest.approx(
        dp.epsilon_from_entries(entries), rel=1e-9
    )
    assert [e.seq for e in entries] == list(range(len(entries)))


# --- format versions ---------------------------------------------------------

#: Three lines written by the version-1 writer during a hospital pilot run.
V1_VECTOR = Path(__file__).parent / "vectors" / "ledger_v1.jsonl"


def test_version_1_lines_are_read_as_add_remove_byte_for_byte() -> None:
    entries = dp.read_ledger(V1_VECTOR)
    assert [e.version for e in entries] == [1, 1, 1]
    assert all(e.neighbouring is dp.Neighbouring.ADD_REMOVE for e in entries)
    assert all(e.accountant is dp.Accountant.RDP for e in entries)
    assert entries[0].clip_bound == 1.0
    assert b"".join(e.line_bytes() for e in entries) == V1_VECTOR.read_bytes()
    assert b'"max_grad_norm":1.0' in V1_VECTOR.read_bytes()
    assert b"neighbouring" not in V1_VECTOR.read_bytes()


def _v1(entries: tuple[dp.LedgerEntry, ...], **changes: object) -> list[dp.LedgerEntry]:
    return [dataclasses.replace(e, **changes) for e in entries]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"accountant": dp.Accountant.PLD}, "a version-1 entry records DP-SGD steps"),
        ({"version": 3}, "version must be one of (1, 2); found 3"),
    ],
)
def test_impossible_version_1_entries_are_refused(
    ledger_path: Path, changes: dict[str, object], words: str
) -> None:
    entries = _v1(dp.read_ledger(V1_VECTOR), **changes)
    ledger_path.write_bytes(b"".join(e.line_bytes() for e in entries))
    with pytest.raises(dp.LedgerCorruptedError) as info:
        dp.read_ledger(ledger_path)
    assert f"line 1: unreadable entry: {words}" in str(info.value)


def test_a_version_1_line_with_a_relation_field_is_refused(ledger_path: Path) -> None:
    obj = json.loads(V1_VECTOR.read_bytes().splitlines()[0])
    obj["neighbouring"] = "replace_one"
    ledger_path.write_bytes(canonical_json(obj) + b"\n")
    with pytest.raises(
        dp.LedgerCorruptedError,
        match=r"line 1: unreadable entry: wrong fields for version 1 \(missing \[\], "
        r"unexpected \['neighbouring'\]\)",
    ):
        dp.read_ledger(ledger_path)


def test_a_version_1_ledger_continues_in_version_2_under_its_own_relation(
    ledger_path: Path,
) -> None:
    ledger_path.write_bytes(V1_VECTOR.read_bytes())
    old = dp.read_ledger(ledger_path)
    # A replace-one client refuses it: its ε was stated for add/remove.
    with pytest.raises(dp.LedgerMismatchError, match="neighbouring=ADD_REMOVE"):
        dp.PrivateClient("client-0", 200, kit.config(delta=1e-4), ledger_path)
    kit.write_ledger(
        ledger_path,
        client_id="client-0",
        rounds=1,
        delta=1e-4,
        accountant=dp.Accountant.RDP,
        neighbouring=dp.Neighbouring.ADD_REMOVE,
        budget=8.0,
        first_round=old[-1].round,
        run=old[-1].step_run,
    )
    entries = dp.read_ledger(ledger_path)
    assert [e.version for e in entries] == [1, 1, 1, 2]
    assert entries[3].epsilon == dp.epsilon_from_entries(entries)
    # The other way round is refused: versions never go back.
    first = dataclasses.replace(entries[3], round=entries[0].round)
    ledger_path.write_bytes(kit.rechain([first, *entries[:3]]))
    with pytest.raises(dp.LedgerCorruptedError, match="line 2: version 1 comes after"):
        dp.read_ledger(ledger_path)
