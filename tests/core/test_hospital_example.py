"""The hospital pilot reaches centralised accuracy within 2 points."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

PILOT = Path(__file__).resolve().parents[2] / "examples" / "hospital_pilot.py"


def load_pilot() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hospital_pilot", PILOT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [0, 1])
def test_pilot_is_within_two_points_of_centralised(seed: int, tmp_path: Path) -> None:
    pilot = load_pilot()
    result = pilot.run_pilot(rounds=10, seed=seed, output_dir=tmp_path, quiet=True)
    assert result.rounds_completed == 10
    assert result.federated_accuracy > 0.9
    assert result.gap_points <= 2.0, result.summary()
    assert (tmp_path / "metrics.jsonl").exists()
    assert (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("seed", [0, 1])
def test_secure_pilot_matches_plain_within_half_a_point(
    seed: int, tmp_path: Path
) -> None:
    pilot = load_pilot()
    plain = pilot.run_pilot(rounds=10, seed=seed, output_dir=tmp_path / "p", quiet=True)
    secure = pilot.run_pilot(
        rounds=10, seed=seed, output_dir=tmp_path / "s", quiet=True, secure=True
    )
    gap = 100 * abs(secure.federated_accuracy - plain.federated_accuracy)
    assert gap <= 0.5, f"secure {secure.summary()} vs plain {plain.summary()}"
    header = (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()[0]
    assert '"secure_aggregation": true' in header
