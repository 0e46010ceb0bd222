"""A pilot's ledgers belong to its institutions, not to a run: a rerun on the
same data continues them, and an institution that has spent its budget
declines while the run still finishes."""

from __future__ import annotations

import json
from pathlib import Path

import dp
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
    spent = max(e[-1].epsilon for e in _ledgers(pilots).values())
    # A budget that the first run's charges leave no room in.
    budget = f"privacy.epsilon_budget={spent * 1.01}"
    again = ["--set", budget, "--set", "federation.rounds=2"]
    assert run_main([str(cfg), "--quiet", *again]) == 0
    out = pilots.tmp_path / "run-2"
    assert all(len(e) == 1 for e in _ledgers(pilots).values())  # nothing charged
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    stopped = [x for x in lines if x["type"] == "stopped"]
    assert stopped and "privacy budget" in stopped[0]["reason"]
    report = (out / "report.md").read_text()
    assert "**Stopped early:**" in report and "1 of 2 rounds" in report
    assert Path(out / "model.pt").is_file()
