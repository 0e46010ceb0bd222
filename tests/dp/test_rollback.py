"""Rollback: a ledger behind its recorded head is refused by the client and the audit.

The attack: after 15 charged rounds the institution's ledger file is cut to its
first 5 lines (or emptied).  The chain of what is left still verifies, so
without a head recorded elsewhere the client would resume at the ε of round 5
and spend the lost rounds' privacy again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch.utils.data import TensorDataset

import dp
from dp.cli import audit_main
from dp.ledger_format import GENESIS_SHA256
from tests.dp import kit

ROUNDS = 15


@pytest.fixture
def fifteen(
    ledger_path: Path, data: TensorDataset, tmp_path: Path
) -> tuple[Path, Path, dp.LedgerHead]:
    """A client trained 15 rounds; the coordinator's metrics.jsonl with its heads."""
    client = kit.client(ledger_path, kit.config(epsilon_budget=1e3))
    model = kit.model()
    metrics = tmp_path / "metrics.jsonl"
    with metrics.open("w") as out:
        for r in range(ROUNDS):
            res = client.train_round(model, data, round_idx=r, lr=0.5)
            model.load_state_dict(res.state_dict)
            assert res.ledger_head == client.ledger_head == client.ledger.head
            record = {"round": r, "ledger_heads": {"c1": res.ledger_head.to_json()}}
            out.write(json.dumps(record) + "\n")
    assert len(kit.ledger_lines(ledger_path)) == ROUNDS
    return ledger_path, metrics, client.ledger_head


def _keep_lines(path: Path, n: int) -> None:
    path.write_bytes(b"".join(kit.ledger_lines(path)[:n]))


def test_truncated_ledger_is_refused_by_the_restarted_client(
    fifteen: tuple[Path, Path, dp.LedgerHead], data: TensorDataset
) -> None:
    path, _, recorded = fifteen
    spent = dp.read_ledger(path)[-1].epsilon
    _keep_lines(path, 5)
    restarted = kit.client(path, kit.config(epsilon_budget=1e3))
    # The attack: the shortened chain verifies and would resume at round 5's ε.
    assert restarted.epsilon_spent() < spent
    with pytest.raises(dp.LedgerRollbackError) as info:
        restarted.check_not_rolled_back(recorded)
    err = info.value
    assert (err.client_id, err.path) == ("c1", str(path))
    assert err.found == dp.LedgerHead(4, dp.read_ledger(path)[4].entry_sha256)
    assert err.expected == recorded
    assert str(err) == (
        f"client 'c1': ledger {path} is behind the head the coordinator recorded "
        f"(it has 5 entries, the recorded head is entry 14): found {err.found}, "
        f"expected seq=14 entry_hash={recorded.entry_hash}; refusing to train on a "
        "rolled-back ledger"
    )
    assert f"seq=4 entry_hash={err.found.entry_hash}" in str(err)  # type: ignore[attr-defined]


def test_emptied_ledger_is_refused_by_the_restarted_client(
    fifteen: tuple[Path, Path, dp.LedgerHead],
) -> None:
    path, _, recorded = fifteen
    path.write_bytes(b"")
    restarted = kit.client(path, kit.config(epsilon_budget=1e3))
    assert restarted.epsilon_spent() == 0.0
    with pytest.raises(dp.LedgerRollbackError) as info:
        restarted.check_not_rolled_back(recorded)
    assert info.value.found == dp.LedgerHead(-1, GENESIS_SHA256)
    assert "(it has 0 entries, the recorded head is entry 14)" in str(info.value)


def test_a_ledger_truncated_under_a_live_client_is_caught(
    fifteen: tuple[Path, Path, dp.LedgerHead],
) -> None:
    path, _, recorded = fifteen
    live = kit.client(path, kit.config(epsilon_budget=1e3))
    live.check_not_rolled_back(recorded)  # in step with the coordinator
    _keep_lines(path, 5)
    with pytest.raises(dp.LedgerRollbackError, match="it has 5 entries"):
        live.check_not_rolled_back(recorded)


def test_a_replaced_history_of_the_same_length_is_refused(
    fifteen: tuple[Path, Path, dp.LedgerHead],
) -> None:
    path, _, recorded = fifteen
    path.unlink()
    # Another 15-entry history for the same client (cheaper steps): the entry
    # at the recorded seq has another hash.
    kit.write_ledger(
        path, client_id="c1", rounds=ROUNDS, run=dp.StepRun(5.0, 0.1, 1), delta=1e-3
    )
    restarted = kit.client(path, kit.config(epsilon_budget=1e3))
    with pytest.raises(
        dp.LedgerRollbackError, match="its entry 14 is not the recorded"
    ):
        restarted.check_not_rolled_back(recorded)


def test_a_ledger_ahead_of_its_recorded_head_is_accepted(
    fifteen: tuple[Path, Path, dp.LedgerHead],
) -> None:
    path, _, _ = fifteen
    older = dp.LedgerHead(9, dp.read_ledger(path)[9].entry_sha256)
    kit.client(path, kit.config(epsilon_budget=1e3)).check_not_rolled_back(older)
    empty = dp.LedgerHead(-1, GENESIS_SHA256)
    kit.client(path, kit.config(epsilon_budget=1e3)).check_not_rolled_back(empty)


def test_the_audit_with_recorded_heads_fails_on_a_truncated_ledger(
    fifteen: tuple[Path, Path, dp.LedgerHead], capsys: pytest.CaptureFixture[str]
) -> None:
    path, metrics, recorded = fifteen
    assert audit_main([str(path), "--heads", str(metrics), "--no-plot"]) == 0
    capsys.readouterr()
    _keep_lines(path, 5)
    # Without the recorded heads the shortened chain still verifies.
    assert audit_main([str(path), "--no-plot"]) == 0
    capsys.readouterr()
    assert audit_main([str(path), "--heads", str(metrics), "--no-plot"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[1].endswith("ROLLED-BACK")
    # Heads of rounds 0-4 are still in the ledger; rounds 5-14 are not.
    assert out.count("is behind the head the coordinator recorded") == 10
    assert (
        f"{path}: client 'c1': ledger {path} is behind the head the coordinator "
        f"recorded (it has 5 entries, the recorded head is entry 14)"
    ) in out
    assert f"expected seq=14 entry_hash={recorded.entry_hash}" in out


def test_the_audit_fails_on_an_empty_ledger_with_and_without_heads(
    fifteen: tuple[Path, Path, dp.LedgerHead], capsys: pytest.CaptureFixture[str]
) -> None:
    path, metrics, recorded = fifteen
    path.write_bytes(b"")
    assert audit_main([str(path), "--no-plot"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[1].endswith("EMPTY")
    assert f"ledger {path} is empty: it records no charge" in out
    assert audit_main([str(path), "--heads", str(metrics), "--no-plot"]) == 1
    out = capsys.readouterr().out
    assert (
        f"{metrics}: client 'c1' has a recorded ledger head ({recorded}) but no "
        "verified ledger among those audited"
    ) in out


def test_a_recorded_client_whose_ledger_is_not_audited_fails(
    fifteen: tuple[Path, Path, dp.LedgerHead],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, metrics, _ = fifteen
    other = tmp_path / "c2.jsonl"
    kit.write_ledger(other, client_id="c2", rounds=1)
    assert audit_main([str(other), "--heads", str(metrics), "--no-plot"]) == 1
    assert "client 'c1' has a recorded ledger head" in capsys.readouterr().out


# --- error paths -------------------------------------------------------------


@pytest.mark.parametrize(
    ("seq", "entry_hash", "message"),
    [
        (-2, GENESIS_SHA256, "seq must be an integer >= -1; found -2"),
        (True, GENESIS_SHA256, "seq must be an integer >= -1; found True"),
        (3, "AB" * 32, "entry_hash must be 64 lowercase hex digits; found 'ABAB"),
        (3, "0" * 63, "entry_hash must be 64 lowercase hex digits"),
        (-1, "1" * 64, "the empty head (seq -1) has the genesis hash (64 zeros)"),
    ],
)
def test_malformed_heads_are_refused(seq: int, entry_hash: str, message: str) -> None:
    with pytest.raises(dp.InvalidLedgerHeadError) as info:
        dp.LedgerHead(seq, entry_hash)
    assert str(info.value).startswith(message)


def test_head_json_round_trips_and_bad_json_is_refused() -> None:
    head = dp.LedgerHead(3, "ab" * 32)
    assert dp.LedgerHead.from_json(json.loads(json.dumps(head.to_json()))) == head
    with pytest.raises(dp.InvalidLedgerHeadError, match=r'must be \{"seq": int'):
        dp.LedgerHead.from_json({"seq": 3})


def test_check_needs_a_ledger_head(ledger_path: Path) -> None:
    with pytest.raises(
        dp.InvalidLedgerHeadError, match="expected must be a LedgerHead; found 14"
    ):
        kit.client(ledger_path).check_not_rolled_back(14)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"round": 1}\n{not json\n', "line 2 is not JSON"),
        ('{"round": 1}\n', "records no ledger head"),
        ('{"ledger_heads": [1, 2]}\n', '"ledger_heads" must map client ids to heads'),
        ('{"ledger_heads": {"c1": {"seq": "x", "entry_hash": "0"}}}', "seq must be"),
    ],
)
def test_malformed_heads_file_exits_2_with_one_line(
    three_rounds: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    message: str,
) -> None:
    heads = tmp_path / "heads.jsonl"
    heads.write_text(content)
    assert audit_main([str(three_rounds), "--heads", str(heads), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: heads file {heads}: ")
    assert message in err and err.count("\n") == 1


def test_missing_heads_file_exits_2(
    three_rounds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    heads = tmp_path / "nope.json"
    assert audit_main([str(three_rounds), "--heads", str(heads), "--no-plot"]) == 2
    assert capsys.readouterr().err == f"error: heads file {heads} not found\n"


def test_a_single_json_document_of_heads_is_read(
    three_rounds: Path, tmp_path: Path
) -> None:
    entries = dp.read_ledger(three_rounds)
    heads = tmp_path / "heads.json"
    heads.write_text(
        json.dumps(
            {"ledger_heads": {"c1": {"seq": 2, "entry_hash": entries[2].entry_sha256}}},
            indent=2,
        )
    )
    assert dp.read_recorded_heads(heads) == {
        "c1": (dp.LedgerHead(2, entries[2].entry_sha256),)
    }
    assert audit_main([str(three_rounds), "--heads", str(heads), "--no-plot"]) == 0
