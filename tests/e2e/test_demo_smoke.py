"""`make demo`'s script runs end to end as a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_hospital_pilot_runs_three_rounds_quietly(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "hospital_pilot.py"),
            "--rounds",
            "3",
            "--quiet",
            "--output-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"--quiet printed more than the summary: {lines}"
    assert re.fullmatch(
        r"federated 0\.\d{3} \| centralised 0\.\d{3} \| gap -?\d+\.\d pts \| "
        r"\d+\.\d s",
        lines[0],
    ), lines[0]
    rows = [
        json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["type"] for r in rows] == ["header", "round", "round", "round"]
