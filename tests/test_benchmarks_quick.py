"""The benchmark scripts' ``--quick`` modes run end to end, so they cannot rot.

Each script runs in a subprocess, exactly as a user would start it
(``python -m benchmarks.NAME --quick``), from the repository root.  In the
main venv flwr is absent: the Flower columns must then be skipped with a note
while our side still runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("secagg_vs_flower", "round_overhead", "scaling", "dp_overhead")
HAS_FLWR = importlib.util.find_spec("flwr") is not None


def _run(name: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_mode_runs_and_writes_json(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.json"
    proc = _run(name, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["quick"] is True
    assert "machine_start" in payload


def test_flower_columns_skipped_with_note_without_flwr(tmp_path: Path) -> None:
    if HAS_FLWR:
        pytest.skip("flwr is installed here; the skip path is not exercised")
    proc = _run("secagg_vs_flower", tmp_path / "svf.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "flwr not installed" in proc.stdout
    payload = json.loads((tmp_path / "svf.json").read_text())
    for row in payload["client"] + payload["server"]:
        assert row["flower"] is None
        assert "flwr not installed" in row["note"]


def test_our_side_is_measured(tmp_path: Path) -> None:
    proc = _run("secagg_vs_flower", tmp_path / "svf.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((tmp_path / "svf.json").read_text())
    complete = [r for r in payload["server"] if "complete" in r["case"]]
    for row in payload["client"] + complete:
        assert row["ours"] is not None, row
        assert row["ours"]["cpu_s"] > 0
    assert all(r["ours"] is not None for r in payload["bytes"])


def test_profile_hotspots_quick() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile_hotspots", "--quick", "--top", "3"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for case in ("## client", "## session", "## dp"):
        assert case in proc.stdout


def test_dp_overhead_quick_times_every_contender(tmp_path: Path) -> None:
    out = tmp_path / "dp.json"
    proc = _run("dp_overhead", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    for res in payload["results"]:
        assert set(res["summaries"]) == {
            "plain", "opacus_hooks", "opacus_ghost", "private_round",
            "private_round_in_round", "of_which_noise", "of_which_accounting",
            "ref_torch_noise",
        }  # fmt: skip
        assert all(s["cpu_s"] > 0 for s in res["summaries"].values())
        assert res["private_grad_sample_mode"] == "ghost"
    assert payload["targets"]
    assert all(isinstance(t["met"], bool) for t in payload["targets"])
    assert "private_round_in_round / Opacus ghost" in proc.stdout
    assert "all threads" in proc.stdout
