"""The end-to-end tests' kit: write a pilot config, run it through the
``fedshield run`` entry point, and check what it leaves behind."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import dp
from core.pilot.commands import run_main

ROOT = Path(__file__).resolve().parents[2]
PNGS = ("accuracy.png", "loss.png", "epsilon.png", "label_distribution.png")
# A given σ skips the per-institution calibration of a target ε: fast runs.
FAST_DP = ["--unset", "privacy.target_epsilon", "--set", "privacy.noise_multiplier=2.0"]


@dataclass(frozen=True)
class Pilots:
    """Builders and checks shared by the end-to-end tests."""

    tmp_path: Path
    capsys: pytest.CaptureFixture[str]

    def config(self, body: str, *, name: str = "pilot.toml", out: str = "out") -> Path:
        """A config file writing its run to ``tmp_path/out`` (plus `body`)."""
        path = self.tmp_path / name
        output = (self.tmp_path / out).as_posix()
        path.write_text(f'[run]\noutput_dir = "{output}"\n{body}\n')
        return path

    def tiny(self, out: Path) -> Path:
        """One fast round on the default data, no baseline."""
        path = self.tmp_path / "tiny.toml"
        path.write_text(
            f'[run]\noutput_dir = "{out.as_posix()}"\ncentralised_baseline = false\n'
            "[federation]\nrounds = 1\n[privacy]\nnoise_multiplier = 2.0\n"
        )
        return path

    def run_example(self, name: str, *extra: str) -> tuple[int, Path, str]:
        """Run ``examples/<name>`` into ``tmp_path/<stem>``: (code, folder, stdout)."""
        out = self.tmp_path / Path(name).stem
        code = run_main([str(ROOT / "examples" / name), "--output", str(out), *extra])
        return code, out, self.capsys.readouterr().out

    def refused(self, body: str, *extra: str) -> str:
        """Run a config that must be refused; return its one stderr line."""
        out = self.tmp_path / "out"
        code = run_main([str(self.config(body)), *extra])
        err = self.capsys.readouterr().err.strip()
        assert code == 2, err
        assert len(err.splitlines()) == 1, err
        assert err.startswith("fedshield run: error: ")
        assert not out.exists() and not out.with_name("out.partial").exists()
        return err

    @staticmethod
    def check_run_folder(
        out: Path, institutions: int, baseline: bool = True, trained: int | None = None
    ) -> str:
        """Assert the folder holds a complete run; return report.md's text."""
        assert not out.with_name(out.name + ".partial").exists()
        for name in ("config.toml", "metrics.jsonl", "model.pt", "report.md", *PNGS):
            assert (out / name).is_file(), name
        for png in PNGS:
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        rounds = [json.loads(line) for line in (out / "metrics.jsonl").open()]
        assert rounds[0]["type"] == "header"
        # The ledgers live outside the run folder, where the header says.
        ledger_dir = Path(rounds[0]["ledger_dir"])
        assert not (out / "ledgers").exists() and out not in ledger_dir.parents
        ledgers = sorted(ledger_dir.glob("*.jsonl"))
        # One ledger per institution that trained (a sampled-out one has none).
        assert len(ledgers) == (institutions if trained is None else trained)
        assert all(dp.read_ledger(p) for p in ledgers)
        state = torch.load(out / "model.pt", weights_only=True)
        assert state and all(isinstance(t, torch.Tensor) for t in state.values())
        # Nothing per institution in the coordinator's log but names.
        assert "label_counts" not in rounds[0]
        assert all("train_loss" not in r.get("metrics", {}) for r in rounds[1:])
        report = (out / "report.md").read_text()
        for png in PNGS:
            assert f"]({png})" in report
        assert "| federated (DP-SGD + secure aggregation) |" in report
        assert ("simulation-only reference: centralised, non-private" in report) is (
            baseline
        )
        assert "client-0.ledger.jsonl`" in report  # names the ledger files
        assert "## The simulation's own view" in report
        resolved = (out / "config.toml").read_text()
        assert "[secure_aggregation]" in resolved and "dropout_rate" in resolved
        return report


    @staticmethod
    def summary(text: str) -> re.Match[str]:
        """The accuracy line of a run's summary (federated, centralised)."""
        found = re.search(
            r"federated \(DP-SGD \+ secure aggregation\) test accuracy (0\.\d+) \| "
            r"centralised non-private (0\.\d+)",
            text,
        )
        assert found, text
        return found


@pytest.fixture
def pilots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Pilots:
    """The end-to-end kit, writing into this test's tmp_path (also the working
    directory, where a pilot keeps its ledgers by default)."""
    monkeypatch.chdir(tmp_path)
    return Pilots(tmp_path, capsys)
