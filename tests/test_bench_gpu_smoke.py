"""Smoke test: the mask-PRG benchmark runs on CPU in quick mode and writes JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_secagg_gpu_benchmark_quick_cpu(tmp_path: Path) -> None:
    out = tmp_path / "secagg_gpu_cpu.json"
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "secagg_gpu.py"),
            "--device",
            "cpu",
            "--quick",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 30, f"quick benchmark took {elapsed:.1f} s"
    assert "copy bandwidth" in proc.stdout and "server unmasking" in proc.stdout
    data = json.loads(out.read_text())
    assert data["quick"] is True
    assert data["environment"]["device"] == "cpu"
    assert data["copy_gbps"] > 0
    assert [m["neighbours"] for m in data["masking"]] == [1, 8]
    for m in data["masking"]:
        assert m["backend"] == "torch-eager"
        assert m["keystream_gbps"] > 0 and m["params_per_s"] > 0
        assert m["keystream_gbps"] * 1e9 * m["seconds"] == pytest.approx(
            4 * m["neighbours"] * m["params"]
        )
    u = data["unmasking"]
    assert u["dropped"] == 6 and u["clients"] == 20
    assert u["surviving_neighbours"] == 14 and u["seconds"] > 0
    assert u["extrapolated"] is False
