"""``fedshield audit`` (``dp.cli.audit_main``): table, PNG, exit status."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import dp
from dp.cli import audit_main
from dp.ledger_audit import Verdict, audit_ledger
from tests.dp import kit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _trained_ledger(path: Path, client_id: str) -> float:
    data = kit.dataset()
    client = kit.client(path, client_id=client_id)
    model = kit.model()
    for r in range(3):
        model.load_state_dict(
            client.train_round(model, data, round_idx=r, lr=0.5).state_dict
        )
    return client.epsilon_spent()


def test_clean_ledgers_give_a_table_a_png_and_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    eps_a = _trained_ledger(a, "hospital-a")
    kit.write_ledger(b, client_id="bank-b", accountant=dp.Accountant.PRV, rounds=3)
    png = tmp_path / "eps.png"
    assert audit_main([str(a), str(b), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    header, row_a, row_b = out.splitlines()[:3]
    for column in ("client", "rounds", "steps", "ε recorded", "ε RDP", "ε PRV"):
        assert column in header
    assert row_a.startswith("hospital-a") and row_a.endswith("OK")
    assert f"{eps_a:.4f}" in row_a
    assert row_b.startswith("bank-b") and row_b.endswith("OK")
    assert f"wrote {png}" in out
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_tampered_ledger_exits_non_zero_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    kit.write_ledger(good, client_id="good")
    kit.write_ledger(bad, client_id="bad")
    lines = bad.read_bytes().splitlines(keepends=True)
    bad.write_bytes(b"".join([lines[0], lines[2], lines[1], lines[3]]))
    png = tmp_path / "eps.png"
    assert audit_main([str(good), str(bad), "--plot", str(png)]) == 1
    out = capsys.readouterr().out
    assert "CORRUPTED" in out
    assert f"ledger {bad}: line 2: seq is 2, expected 1" in out
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_under_reported_epsilon_with_valid_hashes_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "low.jsonl"
    entries = list(kit.write_ledger(path, client_id="low", rounds=4))
    true_eps = entries[2].epsilon
    entries[2] = dataclasses.replace(entries[2], epsilon=true_eps * 0.9)
    path.write_bytes(kit.rechain(entries))
    assert dp.read_ledger(path)[2].epsilon == true_eps * 0.9  # the chain verifies
    assert audit_main([str(path), "--no-plot"]) == 1
    out = capsys.readouterr().out
    assert "UNDER-REPORTED" in out
    assert "line 3 (round 2): recorded ε=" in out
    assert "below the recomputed RDP ε" in out
    assert not (tmp_path / "fedshield-audit-epsilon.png").exists()


def test_over_budget_ledger_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "over.jsonl"
    entries = list(kit.write_ledger(path, rounds=3, budget=50.0))
    entries[2] = dataclasses.replace(entries[2], epsilon_budget=entries[1].epsilon)
    path.write_bytes(kit.rechain(entries))
    audit = audit_ledger(path)
    assert audit.verdict is Verdict.OVER_BUDGET
    assert audit.problems[0].startswith("line 3 (round 2): ε=")
    assert "exceeds the budget" in audit.problems[0]


def test_missing_ledger_and_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert audit_main([str(tmp_path / "none.jsonl"), "--no-plot"]) == 1
    assert "CORRUPTED" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        audit_main([])
    assert info.value.code == 2
    assert dp.cli.main(["not-audit"]) == 2
