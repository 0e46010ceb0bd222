"""A pilot's ledgers belong to its institutions, not to a run: a rerun on the
same data continues them, and an institution that has spent its budget
declines while the run still finishes."""

from __future__ import annotations

import json

import pytest

import dp
from core.pilot.cli import main
from core.pilot.commands import run_main
from tests.e2e.conftest import Pilots


def _ledgers(pilots: Pilots) -> dict[str, tuple[dp.LedgerEntry, ...]]:
    folder = pilots.tmp_path / "ledgers" / "pilot"
    return {p.name: dp.read_ledger(p) for p in sorted(folder.glob("*.jsonl"))}


def test_a_rerun_continues_the_same_ledgers(pilots: Pilots) -> None:
    cfg = pilots.tiny(pilots.tmp_path / "run")
    assert run_main([str(cfg), "--quiet"]) == 0
    first = _ledgers(pilots)
    assert len(first) == 5 and all(len(e) == 1 for e in first.values())
    assert run_main([str(cfg), "--quiet"]) == 0
    second = _ledgers(pilots)
    assert second.keys() == first.keys()
    for name, entries in second.items():
        assert entries[0] == first[name][0]  # the first run's charge, kept
        assert [e.seq for e in entries] == [0, 1]  # the chain continues
        assert [e.round for e in entries] == [1, 2]  # after the ledger's rounds
        assert entries[1].epsilon > entries[0].epsilon  # ε grows
    report = (pilots.tmp_path / "run-2" / "report.md").read_text()
    spent = second["client-0.ledger.jsonl"][-1].epsilon
    assert f"| client 1 | {spent:.3f} / 8 | 1 |" in report


def test_an_exhausted_institution_declines_and_the_run_finishes(
    pilots: Pilots,
) -> None:
    cfg = pilots.tiny(pilots.tmp_path / "run")
    assert run_main([str(cfg), "--quiet"]) == 0
    first = _ledgers(pilots)
    top = max(first, key=lambda name: first[name][-1].epsilon)
    # A budget the biggest spender's first-run charges leave no room in.
    budget = f"privacy.epsilon_budget={first[top][-1].epsilon * 1.01}"
    assert run_main([str(cfg), "--quiet", "--set", budget]) == 0
    assert _ledgers(pilots)[top] == first[top]  # nothing more charged to it
    out = pilots.tmp_path / "run-2"
    log = (out / "metrics.jsonl").read_text().splitlines()
    line = next(json.loads(x) for x in log if '"type": "round"' in x)
    cid = top.removeprefix("client-").removesuffix(".ledger.jsonl")
    assert "privacy budget" in line["skipped"][cid]
    assert (out / "report.md").is_file() and (out / "model.pt").is_file()


@pytest.mark.parametrize("kept", [5, 0], ids=["truncated-5-of-15", "emptied"])
def test_a_rolled_back_ledger_is_refused_and_fails_the_audit(
    pilots: Pilots, kept: int
) -> None:
    out = pilots.tmp_path / "run"
    cfg = [str(pilots.tiny(out)), "--quiet"]
    # σ = 3 and a large budget: 15 rounds fit for every institution.
    roomy = ["--set", "privacy.noise_multiplier=3.0",
             "--set", "privacy.epsilon_budget=100.0"]  # fmt: skip
    cfg += roomy
    assert run_main([*cfg, "--set", "federation.rounds=15"]) == 0
    ledgers = pilots.tmp_path / "ledgers" / "pilot"
    heads = pilots.tmp_path / "ledgers" / "pilot.heads.json"
    victim = ledgers / "client-0.ledger.jsonl"
    lines = victim.read_bytes().splitlines(keepends=True)
    assert len(lines) == 15
    recorded = json.loads(heads.read_text())["ledger_heads"]["client-0"]
    assert recorded["seq"] == 14
    # Every round line records the heads of that round's participants.
    rounds = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
              if '"type": "round"' in x]  # fmt: skip
    assert [r["ledger_heads"]["client-0"]["seq"] for r in rounds] == list(range(15))
    assert rounds[-1]["ledger_heads"]["client-0"] == recorded
    # The institution loses the newest 10 (or all) of its charges.
    victim.write_bytes(b"".join(lines[:kept]))
    pilots.capsys.readouterr()
    assert main(["audit", str(ledgers), "--heads", str(heads), "--no-plot"]) == 1
    audit = pilots.capsys.readouterr().out
    assert ("ROLLED-BACK" if kept else "EMPTY") in audit
    # Rejoining, the institution refuses to train; the others carry on.
    assert run_main([*cfg, "--set", "federation.rounds=1"]) == 0
    log = (pilots.tmp_path / "run-2" / "metrics.jsonl").read_text().splitlines()
    line = next(json.loads(x) for x in log if '"type": "round"' in x)
    assert "client 'client-0': ledger " in line["skipped"]["0"]
    assert "refusing to train on a rolled-back ledger" in line["skipped"]["0"]
    assert "client-0" not in line["ledger_heads"] and len(line["ledger_heads"]) == 4
    assert len(victim.read_bytes().splitlines()) == kept  # nothing charged to it
    report = (pilots.tmp_path / "run-2" / "report.md").read_text()
    assert "ledger audit at the end of the run: **FAILED**" in report


def test_a_ledger_started_under_other_settings_is_refused_before_a_run(
    pilots: Pilots,
) -> None:
    cfg = str(pilots.tiny(pilots.tmp_path / "run"))
    assert run_main([cfg, "--quiet"]) == 0
    pilots.capsys.readouterr()
    assert run_main([cfg, "--quiet", "--set", "privacy.delta=1e-5"]) == 2
    err = pilots.capsys.readouterr().err.strip()
    assert err.startswith("fedshield run: error: privacy.ledger_dir: ledger ")
    assert "delta=0.0001" in err and "delta=1e-05" in err
    assert err.endswith("a ledger continues only under the settings it was started "
                        "with (or choose another ledger_dir)")  # fmt: skip
    assert not (pilots.tmp_path / "run-2").exists()


def test_an_unreadable_heads_file_is_refused_before_a_run(pilots: Pilots) -> None:
    cfg = str(pilots.tiny(pilots.tmp_path / "run"))
    assert run_main([cfg, "--quiet"]) == 0
    pilots.capsys.readouterr()
    (pilots.tmp_path / "ledgers" / "pilot.heads.json").write_text("{not json\n")
    assert run_main([cfg, "--quiet"]) == 2
    err = pilots.capsys.readouterr().err.strip()
    assert err.startswith(
        "fedshield run: error: privacy.ledger_dir: the coordinator's heads file "
    )
    assert "never delete it" in err and len(err.splitlines()) == 1
    assert not (pilots.tmp_path / "run-2").exists()


def test_a_corrupted_ledger_declines_and_the_others_train(pilots: Pilots) -> None:
    cfg = str(pilots.tiny(pilots.tmp_path / "run"))
    assert run_main([cfg, "--quiet"]) == 0
    victim = pilots.tmp_path / "ledgers" / "pilot" / "client-2.ledger.jsonl"
    victim.write_bytes(victim.read_bytes().replace(b'"round":1', b'"round":7'))
    assert run_main([cfg, "--quiet"]) == 0
    log = (pilots.tmp_path / "run-2" / "metrics.jsonl").read_text().splitlines()
    line = next(json.loads(x) for x in log if '"type": "round"' in x)
    assert line["skipped"]["2"].startswith("declined: privacy ledger unreadable: ")
    assert len(line["ledger_heads"]) == 4 and "client-2" not in line["ledger_heads"]
