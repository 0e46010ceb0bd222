"""`fedshield run` config validation and `fedshield init`, through the entry points.

Every bad config must end with exit status 2, one line on stderr naming the
problem, and no run folder. (The schema's own rules are tested in
tests/core/pilot; here each kind of refusal is driven end to end once.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.pilot.commands import init_main, run_main
from core.pilot.config_file import load_config
from core.pilot.schema import parse_config
from tests.e2e.conftest import FAST_DP, ROOT, Pilots

EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[privacy]\ntarget_epsilom = 2.0",
         "unknown key privacy.target_epsilom; did you mean 'target_epsilon'?"),
        ("[secure_agregation]\nclip = 1.0",
         "unknown table [secure_agregation]; did you mean 'secure_aggregation'?"),
        ('[split]\nmethod = "dirichlett"',
         "split.method must be one of 'iid', 'dirichlet', 'quantity_skew', "
         "'natural'; found 'dirichlett'"),
        ('[federation]\nrounds = "ten"',
         "federation.rounds must be an int; found 'ten'"),
        ("[privacy]\ndelta = 1.5", "privacy.delta must be in (0, 1)"),
        ('[secure_aggregation]\nmode = "paranoid"',
         "secure_aggregation.mode must be one of 'semi-honest', 'hardened'"),
        ("[privacy]\nnoise_multiplier = 1.0\ntarget_epsilon = 2.0",
         "privacy.noise_multiplier: exactly one of noise_multiplier and "
         "target_epsilon must be set"),
        ("[federation\nrounds = 2", "not valid TOML"),
    ],
    ids=["unknown-key", "unknown-table", "enum", "type", "dp-range", "secagg-enum",
         "dp-exclusive", "not-toml"],
)
def test_a_bad_config_is_one_line_exit_2_and_no_folder(
    pilots: Pilots, body: str, message: str
) -> None:
    assert message in pilots.refused(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # The largest of 5 breast-cancer institutions has 100-200 rows: the
        # derived max_weight needs 8-9 bits, 16 + 9 + 1 > 24.
        ("[secure_aggregation]\nring_bits = 24",
         "secure_aggregation.ring_bits must be >= value_bits + bits of "
         "max_weight + 1"),
        ("[secure_aggregation]\nmax_weight = 16",
         "secure_aggregation.max_weight must be >= the largest institution's"),
        ("[federation]\nclients_per_round = 9",
         "federation.clients_per_round must be <= the 5 institutions; found 9"),
    ],
    ids=["ring-for-the-data", "max-weight-below-data", "cohort"],
)
def test_data_dependent_refusals_come_before_any_folder(
    pilots: Pilots, body: str, message: str
) -> None:
    assert message in pilots.refused(body)


def test_a_missing_config_file(pilots: Pilots) -> None:
    assert run_main([str(pilots.tmp_path / "nope.toml")]) == 2
    assert "does not exist" in pilots.capsys.readouterr().err


def test_bad_overrides(pilots: Pilots) -> None:
    err = pilots.refused("", "--set", "federation.roundz=3")
    assert "did you mean 'rounds'?" in err
    assert "--set needs TABLE.KEY=VALUE" in pilots.refused("", "--set", "rounds")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--dry-run" in out and "--unset" in out
    assert init_main(["--help"]) == 0


def test_dry_run_prints_the_resolved_config_and_runs_nothing(pilots: Pilots) -> None:
    cfg = pilots.config("[federation]\nrounds = 3")
    assert run_main([str(cfg), "--dry-run", "--set", "privacy.delta=1e-5"]) == 0
    printed = pilots.capsys.readouterr().out
    assert f"{cfg}: valid; resolved:" in printed
    assert "rounds = 3" in printed and "delta = 1e-05" in printed
    assert not (pilots.tmp_path / "out").exists()
    written = pilots.tmp_path / "resolved.toml"
    written.write_text(printed)
    assert load_config(written) == load_config(
        cfg, ["privacy.delta=1e-5"]
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_shipped_examples_are_valid(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.privacy.enabled and cfg.secure_aggregation.enabled


def test_init_writes_a_config_that_run_accepts(pilots: Pilots) -> None:
    path = pilots.tmp_path / "sub" / "pilot.toml"
    assert init_main([str(path)]) == 0
    assert load_config(path) == parse_config({})  # the template holds the defaults
    assert init_main([str(path)]) == 2  # no silent overwrite
    assert "--force" in pilots.capsys.readouterr().err
    out = pilots.tmp_path / "run"
    code = run_main([str(path), "--quiet", "--output", str(out),
                     "--set", "federation.rounds=1", *FAST_DP])
    assert code == 0, pilots.capsys.readouterr().err
    assert (out / "report.md").is_file()
