"""report.md speaks to a data-protection officer: what ε and δ mean and what
one record is, the threat assumptions, provenance that can be checked (every
hash recomputed here), the limitations, and per-site counts only in the
section marked as the simulation's own view."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import dp
from core.pilot.commands import run_main
from tests.e2e.conftest import Pilots


def _section(report: str, title: str) -> str:
    start = report.index(f"## {title}\n")
    end = report.find("\n## ", start + 1)
    return report[start : end if end >= 0 else None]


def test_the_report_is_checkable_by_a_data_protection_officer(pilots: Pilots) -> None:
    out = pilots.tmp_path / "run"
    cfg = pilots.tiny(out)
    assert run_main([str(cfg), "--quiet", "--set", "federation.rounds=2"]) == 0
    report = (out / "report.md").read_text()
    privacy = _section(report, "Privacy")
    assert "e^ε times" in privacy and "except with probability δ" in privacy
    assert "one record replaced by another (replace-one neighbours)" in privacy
    assert "row counts are not what it hides: they are treated as public" in privacy
    assert "no training metric is released" in privacy
    threats = _section(report, "Threat assumptions")
    assert "assumed semi-honest" in threats
    assert "no institution is assumed to collude with it" in threats
    assert "even if all of them collude" in threats
    # Provenance: every hash is the one of the artefact it names.
    prov = _section(report, "Provenance")
    model = hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()
    assert f"final model (`model.pt`) SHA-256 `{model}`" in prov
    assert re.search(r"fedshield \S+, commit `[0-9a-f]{40}(\+changes)?`", prov)
    assert re.search(r"data source SHA-256 `[0-9a-f]{64}`", prov)
    assert "ledger audit at the end of the run: **passed**" in prov
    heads = dp.read_recorded_heads(pilots.tmp_path / "ledgers" / "pilot.heads.json")
    for client, recorded in heads.items():
        head = recorded[-1]
        assert f"{client}: {head.seq} `{head.entry_hash[:12]}…`" in prov
        ledger = pilots.tmp_path / "ledgers" / "pilot" / f"{client}.ledger.jsonl"
        assert dp.read_ledger(ledger)[-1].entry_sha256 == head.entry_hash
    assert "protected only at k·ε" in _section(report, "Limitations")
    # Per-site rows and labels only in the simulation's own view.
    before = report[: report.index("## The simulation's own view")]
    assert "training rows |" not in before and "benign:" not in before
    own = _section(report, "The simulation's own view")
    assert "| institution | training rows | labels | imputed values |" in own
    header = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert set(header) >= {"institutions", "ledger_dir"}
    assert "label_counts" not in header


def test_an_add_remove_pilot_says_so_and_does_not_call_counts_public(
    pilots: Pilots,
) -> None:
    out = pilots.tmp_path / "run"
    relation = ["--set", 'privacy.neighbouring="add_remove"']
    assert run_main([str(pilots.tiny(out)), "--quiet", *relation]) == 0
    report = (out / "report.md").read_text()
    assert "one record added or removed (add/remove-one neighbours)" in report
    assert "treated as public" not in report
    assert all(e.neighbouring is dp.Neighbouring.ADD_REMOVE
               for p in (pilots.tmp_path / "ledgers" / "pilot").glob("*.jsonl")
               for e in dp.read_ledger(Path(p)))  # fmt: skip
