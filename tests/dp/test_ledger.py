"""Ledger: round trip, canonical form, hash chain, tamper and torn-line detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dp import (
    Accountant,
    BudgetExceeded,
    LedgerCorrupted,
    LedgerError,
    LedgerMismatchError,
    PrivacyLedger,
    StepRun,
    epsilon_for_history,
    epsilon_from_entries,
    read_ledger,
)
from dp.ledger_format import GENESIS_SHA256, canonical_json

RUN = StepRun(1.1, 0.01, 100)


def _charge(ledger: PrivacyLedger, round_idx: int, **kw: object) -> None:
    eps = epsilon_for_history([*ledger.history, RUN], 1e-5, Accountant.RDP)
    args: dict[str, object] = {
        "client_id": "c1",
        "round_idx": round_idx,
        "run": RUN,
        "delta": 1e-5,
        "accountant": Accountant.RDP,
        "epsilon": eps,
        "epsilon_budget": 5.0,
        "max_grad_norm": 1.0,
    }
    args.update(kw)
    ledger.append(**args)  # type: ignore[arg-type]


@pytest.fixture
def three(tmp_path: Path) -> Path:
    path = tmp_path / "c1.jsonl"
    ledger = PrivacyLedger.open(path, missing_ok=True)
    for r in range(3):
        _charge(ledger, r)
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _corrupt_at(path: Path, line: int, match: str) -> None:
    with pytest.raises(LedgerCorrupted, match=match) as info:
        PrivacyLedger.open(path)
    assert info.value.line == line
    assert f"line {line}:" in str(info.value)


def test_round_trip_and_chain(three: Path) -> None:
    ledger = PrivacyLedger.open(three)
    entries = ledger.entries
    assert [e.seq for e in entries] == [0, 1, 2]
    assert [e.round for e in entries] == [0, 1, 2]
    assert entries[0].prev_sha256 == GENESIS_SHA256
    assert entries[1].prev_sha256 == entries[0].entry_sha256
    assert ledger.head_sha256 == entries[2].entry_sha256
    assert ledger.epsilon_spent == pytest.approx(
        epsilon_from_entries(entries, 1e-5, Accountant.RDP)
    )
    assert ledger.epsilon_spent == pytest.approx(
        epsilon_for_history([StepRun(1.1, 0.01, 300)], 1e-5, Accountant.RDP)
    )
    ledger.verify()


def test_lines_are_canonical_json_with_self_hash(three: Path) -> None:
    for raw in _lines(three):
        obj = json.loads(raw)
        claimed = obj.pop("entry_sha256")
        import hashlib

        assert hashlib.sha256(canonical_json(obj)).hexdigest() == claimed
        assert canonical_json({**obj, "entry_sha256": claimed}) == raw


def test_edited_field_names_the_line(three: Path) -> None:
    lines = _lines(three)
    obj = json.loads(lines[1])
    obj["epsilon"] = obj["epsilon"] / 2
    lines[1] = canonical_json(obj)
    _write(three, lines)
    _corrupt_at(three, 2, "entry_sha256 does not match")


def test_edit_with_recomputed_hash_breaks_the_chain(three: Path) -> None:
    import hashlib

    lines = _lines(three)
    obj = json.loads(lines[1])
    obj.pop("entry_sha256")
    obj["epsilon"] = 0.01
    obj["entry_sha256"] = hashlib.sha256(
        canonical_json({k: v for k, v in obj.items() if k != "entry_sha256"})
    ).hexdigest()
    lines[1] = canonical_json(obj)
    _write(three, lines)
    _corrupt_at(three, 3, "hash chain broken")


def test_deleted_line(three: Path) -> None:
    lines = _lines(three)
    del lines[1]
    _write(three, lines)
    _corrupt_at(three, 2, "seq is 2, expected 1: a line was deleted")


def test_reordered_lines(three: Path) -> None:
    lines = _lines(three)
    lines[1], lines[2] = lines[2], lines[1]
    _write(three, lines)
    _corrupt_at(three, 2, "seq is 2, expected 1")


def test_torn_last_line(three: Path) -> None:
    data = three.read_bytes()
    three.write_bytes(data[:-40])
    _corrupt_at(three, 3, "torn last line")


def test_non_canonical_whitespace(three: Path) -> None:
    lines = _lines(three)
    lines[0] = lines[0].replace(b'"version":1', b'"version": 1')
    _write(three, lines)
    _corrupt_at(three, 1, "not in canonical form")


def test_garbage_line(three: Path) -> None:
    lines = _lines(three)
    lines.insert(1, b"{not json")
    _write(three, lines)
    _corrupt_at(three, 2, "unreadable entry")


def test_other_client_in_the_same_file(three: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    ledger = PrivacyLedger.open(other, missing_ok=True)
    _charge(ledger, 0, client_id="c2")
    ledger2 = PrivacyLedger.open(three)
    with pytest.raises(LedgerMismatchError, match=r"client_id='c1'.*client_id='c2'"):
        _charge(ledger2, 3, client_id="c2")


def test_budget_refusal_leaves_bytes_unchanged(three: Path) -> None:
    before = three.read_bytes()
    ledger = PrivacyLedger.open(three)
    with pytest.raises(BudgetExceeded, match=r"above its budget ε=1\.0000"):
        _charge(ledger, 3, epsilon_budget=1.0)
    assert three.read_bytes() == before
    assert len(ledger.entries) == 3


def test_round_going_backwards_is_refused(three: Path) -> None:
    before = three.read_bytes()
    with pytest.raises(
        LedgerError, match="round_idx must be >= the last charged round"
    ):
        _charge(PrivacyLedger.open(three), 1)
    assert three.read_bytes() == before


def test_concurrent_writer_is_detected(three: Path) -> None:
    a = PrivacyLedger.open(three)
    b = PrivacyLedger.open(three)
    _charge(b, 3)
    with pytest.raises(LedgerError, match="changed on disk since it was read"):
        _charge(a, 4)
    with pytest.raises(LedgerError, match="changed on disk"):
        a.verify()
    assert len(read_ledger(three)) == 4


def test_missing_ledger(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="does not exist"):
        PrivacyLedger.open(tmp_path / "nope.jsonl")
    empty = PrivacyLedger.open(tmp_path / "nope.jsonl", missing_ok=True)
    assert empty.entries == () and empty.epsilon_spent == 0.0
    assert not (tmp_path / "nope.jsonl").exists()
