"""`fedshield run` config validation and `fedshield init`, through the entry points.

Every bad config must end with exit status 2, one line on stderr naming the
problem, and no run folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.pilot.commands import apply_overrides, init_main, run_main
from core.pilot.schema import (
    DataSource,
    PilotConfig,
    SecAggMode,
    SplitMethod,
    load_config,
    parse_config,
    to_toml,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def _run_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str) -> str:
    """Run a config expected to be refused; return the stderr line."""
    cfg = tmp_path / "bad.toml"
    out = tmp_path / "out"
    cfg.write_text(f'[run]\noutput_dir = "{out.as_posix()}"\n{body}\n')
    code = run_main([str(cfg)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fedshield run: error: ")
    assert not out.exists()
    assert not out.with_name("out.partial").exists()
    return err


def test_unknown_key_suggests_the_nearest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_bad(tmp_path, capsys, "[privacy]\ntarget_epsilom = 2.0")
    assert "unknown key privacy.target_epsilom" in err
    assert "did you mean 'target_epsilon'?" in err


def test_unknown_table_suggests_the_nearest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_bad(tmp_path, capsys, "[secure_agregation]\nclip = 1.0")
    assert "unknown table [secure_agregation]" in err
    assert "did you mean 'secure_aggregation'?" in err


def test_bad_enum_value_lists_the_allowed_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_bad(tmp_path, capsys, '[split]\nmethod = "dirichlett"')
    assert "split.method must be one of" in err
    assert "'dirichlet'" in err and "'dirichlett'" in err


def test_bad_type_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_bad(tmp_path, capsys, '[federation]\nrounds = "ten"')
    assert "federation.rounds must be an int; found 'ten'" in err


def test_out_of_range_value_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_bad(tmp_path, capsys, "[privacy]\ndelta = 1.5")
    assert "privacy.delta must be in (0, 1)" in err


def test_dropout_tolerance_above_half_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_bad(tmp_path, capsys, "[secure_aggregation]\ndropout_tolerance = 0.8")
    assert "secure_aggregation.dropout_tolerance" in err


def test_unknown_secagg_mode_lists_the_allowed_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_bad(tmp_path, capsys, '[secure_aggregation]\nmode = "paranoid"')
    assert "secure_aggregation.mode" in err
    assert "hardened" in err


def test_noise_and_target_are_exclusive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_bad(tmp_path, capsys, "[privacy]\nnoise_multiplier = 1.0")
    assert "exactly one must be > 0" in err


def test_not_toml_and_missing_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_bad(tmp_path, capsys, "[federation\nrounds = 2")
    assert "not valid TOML" in err
    assert run_main([str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ring_too_small_for_the_cohort_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_bad(tmp_path, capsys, "[secure_aggregation]\nring_bits = 24")
    assert "secure_aggregation.ring_bits must be >= " in err


def test_bad_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    assert run_main([str(cfg), "--set", "federation.roundz=3"]) == 2
    assert "did you mean 'rounds'?" in capsys.readouterr().err
    assert run_main([str(cfg), "--set", "rounds"]) == 2
    assert "TABLE.KEY=VALUE" in capsys.readouterr().err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--help"]) == 0
    assert "CONFIG" in capsys.readouterr().out.upper()
    assert init_main(["--help"]) == 0


def test_defaults_and_enums() -> None:
    cfg = parse_config({})
    assert cfg == PilotConfig()
    assert cfg.data.source is DataSource.BREAST_CANCER
    assert cfg.split.method is SplitMethod.DIRICHLET
    assert cfg.secure_aggregation.mode is SecAggMode.SEMI_HONEST
    assert cfg.privacy.enabled and cfg.secure_aggregation.enabled
    with pytest.raises(ConfigError, match=r"data\.features must be a list"):
        parse_config({"data": {"features": "age"}})


def test_resolved_toml_round_trips(tmp_path: Path) -> None:
    cfg = apply_overrides(PilotConfig(), ['data.drop=["a", "b"]',
                                          "secure_aggregation.dropout_rate=0.25"])
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_shipped_examples_are_valid(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.privacy.enabled and cfg.secure_aggregation.enabled


def test_init_writes_a_config_that_run_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sub" / "pilot.toml"
    assert init_main([str(path)]) == 0
    assert load_config(path) == PilotConfig()  # the template holds the defaults
    assert init_main([str(path)]) == 2  # no silent overwrite
    assert "--force" in capsys.readouterr().err
    out = tmp_path / "run"
    code = run_main([str(path), "--quiet", "--output", str(out),
                     "--set", "federation.rounds=1",
                     "--set", "privacy.target_epsilon=0.0",
                     "--set", "privacy.noise_multiplier=1.0"])
    assert code == 0, capsys.readouterr().err
    assert (out / "report.md").is_file()
