"""``fedshield audit`` (``dp.cli.audit_main``): recomputation, table, PNG, exits."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

import dp
import dp.ledger_audit
import dp.pld
from dp.cli import audit_main
from dp.ledger_audit import INDEPENDENT_TOLERANCE, Verdict, audit_ledger
from tests.dp import kit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
V1_VECTOR = Path(__file__).parent / "vectors" / "ledger_v1.jsonl"


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
    kit.write_ledger(
        b,
        client_id="bank-b",
        accountant=dp.Accountant.PRV,
        neighbouring=dp.Neighbouring.ADD_REMOVE,
        rounds=3,
    )
    png = tmp_path / "eps.png"
    assert audit_main([str(a), str(b), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    header, row_a, row_b = out.splitlines()[:3]
    for column in ("client", "relation", "ε recorded", "ε recomputed", "ε lower (PLD)"):
        assert column in header
    assert row_a.split()[:3] == ["hospital-a", "replace-one", "PLD"]
    assert row_a.endswith("OK") and f"{eps_a:.4f}" in row_a
    assert row_b.split()[:3] == ["bank-b", "add/remove", "PRV"]
    assert row_b.endswith("OK")
    assert f"wrote {png}" in out
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_a_folder_argument_audits_every_ledger_in_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("c1", "c2"):
        kit.write_ledger(tmp_path / f"{name}.jsonl", client_id=name, rounds=2)
    assert audit_main([str(tmp_path), "--no-plot"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:3]
    assert [r.split()[0] for r in rows] == ["c1", "c2"]


@pytest.mark.parametrize(
    ("relation", "accountant"),
    [
        (dp.Neighbouring.REPLACE_ONE, dp.Accountant.PLD),
        (dp.Neighbouring.ADD_REMOVE, dp.Accountant.PLD),
        (dp.Neighbouring.ADD_REMOVE, dp.Accountant.RDP),
    ],
)
def test_audit_recomputes_under_the_recorded_relation(
    ledger_path: Path, relation: dp.Neighbouring, accountant: dp.Accountant
) -> None:
    entries = kit.write_ledger(
        ledger_path, rounds=3, accountant=accountant, neighbouring=relation
    )
    audit = audit_ledger(ledger_path)
    assert audit.verdict is Verdict.OK, audit.problems
    history = [e.step_run for e in entries]
    # The ledger's own accountant, under the ledger's own relation, at every
    # round end; and the independent lower bound, never above the record.
    for i in range(3):
        assert audit.recomputed[i] == dp.epsilon_for_history(
            history[: i + 1], 1e-5, accountant, neighbouring=relation
        )
        assert audit.recomputed[i] == entries[i].epsilon
    lower = dp.epsilon_lower_bound(history, 1e-5, neighbouring=relation)
    assert audit.epsilon_lower == lower
    assert lower <= entries[-1].epsilon + INDEPENDENT_TOLERANCE


def test_a_ledger_recorded_under_the_wrong_relation_is_caught(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A writer that claims replace-one but wrote the add/remove ε (about 40 %
    # lower), with every hash valid: both recomputations refuse it.
    entries = list(kit.write_ledger(ledger_path, rounds=3))
    add_remove = [
        dp.epsilon_for_history(
            [e.step_run for e in entries[: i + 1]],
            1e-5,
            dp.Accountant.PLD,
            neighbouring=dp.Neighbouring.ADD_REMOVE,
        )
        for i in range(3)
    ]
    entries = [
        dataclasses.replace(e, epsilon=eps)
        for e, eps in zip(entries, add_remove, strict=True)
    ]
    ledger_path.write_bytes(kit.rechain(entries))
    assert audit_main([str(ledger_path), "--no-plot"]) == 1
    out = capsys.readouterr().out
    assert "UNDER-REPORTED" in out
    assert "line 3 (round 2): recorded ε=" in out
    assert "below the recomputed PLD ε=" in out
    assert "below the independent PLD lower bound" in out
    assert "under REPLACE_ONE" in out


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
    assert "below the recomputed PLD ε" in out
    assert not (tmp_path / "fedshield-audit-epsilon.png").exists()


def test_over_budget_ledger_is_flagged(ledger_path: Path) -> None:
    entries = list(kit.write_ledger(ledger_path, rounds=3, budget=50.0))
    entries[2] = dataclasses.replace(entries[2], epsilon_budget=entries[1].epsilon)
    ledger_path.write_bytes(kit.rechain(entries))
    audit = audit_ledger(ledger_path)
    assert audit.verdict is Verdict.OVER_BUDGET
    assert audit.problems[0].startswith("line 3 (round 2): ε=")
    assert "exceeds the budget" in audit.problems[0]


def test_version_1_ledger_is_read_as_add_remove_and_the_audit_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "old.jsonl"
    shutil.copy(V1_VECTOR, path)
    assert audit_main([str(path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:3] == ["client-0", "add/remove", "RDP"]
    assert (
        f"{path}: note: ledger format v1 records no neighbouring relation: read as "
        "add/remove-one (ADD_REMOVE)"
    ) in out


def test_audit_recomputes_only_at_round_ends_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 16 ledgers of one schedule, 2 entries a round (DP-SGD + loss release)
    # for 5 rounds: the own-accountant ε is needed at 5 round ends, once for
    # all 16 ledgers, and the lower bound once.
    loss = dp.StepRun(8.0, 1.0, 1, dp.Mechanism.GAUSSIAN_BOUNDED_SUM)
    for c in range(16):
        path = tmp_path / f"c{c}.jsonl"
        for r in range(5):
            for run in (dp.StepRun(1.1, 0.01, 100), loss):
                kit.write_ledger(
                    path, client_id=f"c{c}", rounds=1, run=run, first_round=r
                )
    dp.pld.pld_epsilon.cache_clear()
    dp.pld.pld_epsilon_lower.cache_clear()
    audits, orphans = dp.ledger_audit.audit_ledgers(sorted(tmp_path.glob("*.jsonl")))
    assert not orphans and all(a.verdict is Verdict.OK for a in audits)
    assert all(sorted(a.recomputed) == [1, 3, 5, 7, 9] for a in audits)
    own = dp.pld.pld_epsilon.cache_info()
    lower = dp.pld.pld_epsilon_lower.cache_info()
    assert (own.misses, lower.misses) == (5, 1)


def test_missing_ledger_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.jsonl"
    assert audit_main([str(missing), "--no-plot"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: ledger {missing} not found\n"
    assert captured.out == ""


def test_empty_folder_and_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert audit_main([str(tmp_path), "--no-plot"]) == 2
    assert (
        capsys.readouterr().err == f"error: no ledgers (*.jsonl) in folder {tmp_path}\n"
    )
    kit.write_ledger(tmp_path / "c1.jsonl", rounds=1)
    assert audit_main([str(tmp_path), "--no-plot", "--canaries", "5"]) == 2
    assert capsys.readouterr().err == "error: --canaries needs M >= 20\n"
    with pytest.raises(SystemExit) as info:
        audit_main([])
    assert info.value.code == 2
    assert dp.cli.main(["not-audit"]) == 2


def test_missing_matplotlib_exits_2_with_an_install_hint(
    ledger_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    kit.write_ledger(ledger_path, rounds=1)
    real = importlib.import_module

    def no_matplotlib(name: str, *args: object) -> object:
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib, "import_module", no_matplotlib)
    assert audit_main([str(ledger_path), "--plot", str(ledger_path) + ".png"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the ε plot needs matplotlib: pip install")
    assert err.count("\n") == 1


def test_a_replace_one_audit_imports_neither_torch_nor_opacus(
    ledger_path: Path,
) -> None:
    # What keeps `fedshield audit` fast: `dp` loads its names on first use, and
    # a PLD ledger needs only dp-accounting.
    import subprocess
    import sys

    kit.write_ledger(ledger_path, rounds=2)
    script = (
        "import sys; from dp.cli import audit_main; "
        f"code = audit_main([{str(ledger_path)!r}, '--no-plot']); "
        "print(code, 'torch' in sys.modules, 'opacus' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert out.splitlines()[-1] == "0 False False"
