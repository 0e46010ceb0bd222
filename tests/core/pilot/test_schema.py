"""The pilot schema hands each value to the library that owns it, once.

A key the libraries own reaches their config object in one hop and is
validated there (the pilot's error is the library's message, renamed to the
TOML key); defaults are the libraries' own; the template and the resolved
config are written from the schema and read back unchanged.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest

import dp
import secagg
from core import ConfigError, FederationConfig, LocalTrainingConfig, OptimizerKind
from core.config import DropoutSimulation
from core.pilot.config_file import (
    apply_overrides,
    init_template,
    load_config,
    to_tables,
    to_toml,
)
from core.pilot.schema import KEYS, PILOT_DEFAULTS, parse_config


def test_clip_ring_bits_and_target_epsilon_reach_their_library_in_one_hop() -> None:
    cfg = parse_config({
        "secure_aggregation": {"clip": 0.5, "ring_bits": 40},
        "privacy": {"target_epsilon": 2.5},
    })  # fmt: skip
    settings = cfg.secure_aggregation.settings
    assert isinstance(settings, secagg.SecAggSettings)
    assert (settings.clip, settings.ring_bits) == (0.5, 40)
    assert isinstance(cfg.privacy.config, dp.DPConfig)
    assert cfg.privacy.config.target_epsilon == 2.5


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"secure_aggregation": {"clip": -1.0}},
         "secure_aggregation.clip must be finite and > 0, got -1.0"),
        ({"secure_aggregation": {"ring_bits": 70}},
         r"secure_aggregation.ring_bits must be in \[8, 62\], got 70"),
        ({"secure_aggregation": {"mode": "hardened", "dropout_tolerance": 0.5}},
         r"secure_aggregation.corrupt_fraction \+ 2·dropout_tolerance must be "
         r"<= 0.9 \(hardened\)"),
        ({"privacy": {"target_epsilon": -1.0}},
         "privacy.target_epsilon must be finite and > 0; found -1.0"),
        ({"privacy": {"delta": 1.5}}, r"privacy.delta must be in \(0, 1\)"),
        ({"privacy": {"noise_multiplier": 1.0, "target_epsilon": 2.0}},
         "privacy.noise_multiplier: exactly one of noise_multiplier and "
         "target_epsilon must be set"),
        ({"privacy": {"accountant": "moments"}},
         "privacy.accountant must be one of 'rdp', 'prv', 'pld'; found 'moments'"),
        ({"federation": {"rounds": 0}}, "federation.rounds must be >= 1; found 0"),
        ({"federation": {"rounds": "ten"}},
         "federation.rounds must be an int; found 'ten'"),
        ({"training": {"optimizer": "adam", "momentum": 0.5},
          "privacy": {"enabled": False}},
         "training.momentum must be 0 unless optimizer is 'sgd'"),
        # DP-SGD needs a batch: the DP library refuses 0, and the error names
        # the key the value came from.
        ({"training": {"batch_size": 0}},
         "training.batch_size must be an integer >= 1; found 0"),
        ({"split": {"alpha": -1.0}}, r"split.alpha must be in \(0, inf\]; found -1"),
        ({"secure_aggregation": {"dropout_rate": 1.5}},
         r"secure_aggregation.dropout_rate must be in \[0, 1\); found 1.5"),
    ],
    ids=[
        "secagg-clip", "secagg-ring", "secagg-rates", "dp-target", "dp-delta",
        "dp-exclusive", "dp-enum", "core-rounds", "core-type", "core-momentum",
        "derived-key", "partitioner-alpha", "simulation-rate",
    ],
)
def test_the_owning_library_refuses_and_the_error_names_the_toml_key(
    tables: dict[str, dict[str, Any]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(tables)
    assert len(str(caught.value).splitlines()) == 1


def _library_defaults(cls: type[Any]) -> dict[str, Any]:
    return {
        f.name: f.default
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING
    }


def test_defaults_are_the_libraries_own() -> None:
    tables = to_tables(parse_config({}))
    owners = {
        "federation": FederationConfig,
        "training": LocalTrainingConfig,
        "privacy": dp.DPConfig,
        "secure_aggregation": secagg.SecAggSettings,
    }
    for table, cls in owners.items():
        for key, default in _library_defaults(cls).items():
            if key not in tables[table] and key not in PILOT_DEFAULTS.get(table, {}):
                continue  # derived from other keys (e.g. federation.seed)
            if default is None or key in PILOT_DEFAULTS.get(table, {}):
                continue
            plain = default.value if hasattr(default, "value") else default
            assert tables[table].get(key) == plain, f"{table}.{key}"
    # The pilot fills in only what a library leaves to its caller: a required
    # field, or one of a pair the caller must choose between (None).
    for table, values in PILOT_DEFAULTS.items():
        defaults = _library_defaults(owners[table])
        assert all(defaults.get(k) is None for k in values), table


def _hints(cls: type[Any]) -> set[str]:
    return set(typing.get_type_hints(cls))


@pytest.mark.parametrize(
    ("table", "cls", "derived"),
    [
        ("federation", FederationConfig,
         {"seed", "checkpoint_every", "fraction_fit", "min_fit_clients"}),
        ("training", LocalTrainingConfig, set()),
        ("privacy", dp.DPConfig, {"planned_rounds", "batch_size", "local_epochs"}),
        ("secure_aggregation", secagg.SecAggSettings, set()),
    ],
)
def test_every_library_field_is_a_key_or_derived(
    table: str, cls: type[Any], derived: set[str]
) -> None:
    # A field added to a library config must be surfaced (or derived on
    # purpose), never silently fixed by the pilot.
    keys = {k.name for k in KEYS[table]}
    assert _hints(cls) <= keys | derived
    assert not keys & derived


def test_every_key_has_help_and_the_template_holds_the_defaults(
    tmp_path: Path,
) -> None:
    text = init_template("pilot.toml")
    for table, keys in KEYS.items():
        assert f"[{table}]" in text
        for key in keys:
            assert key.help.strip(), f"{table}.{key.name} has no help text"
            assert f"# {key.help}" in text
    path = tmp_path / "pilot.toml"
    path.write_text(text)
    assert load_config(path) == parse_config({})


@pytest.mark.parametrize(
    "tables",
    [
        {},
        {"privacy": {"noise_multiplier": 1.2, "accountant": "prv",
                     "neighbouring": "add_remove"}},
        {"privacy": {"noise_multiplier": 1.0, "release_loss": True,
                     "loss_bound": 4.0,
                     "loss_noise_multiplier": 2.0}},
        {"privacy": {"enabled": False}, "secure_aggregation": {"enabled": False}},
        {"secure_aggregation": {"max_weight": 4096, "ring_bits": 48,
                                "mode": "hardened", "dropout_rate": 0.25},
         "data": {"drop": ["a", "b"]}, "training": {"optimizer": "adam"}},
    ],
    ids=["defaults", "sigma-given", "loss-released", "both-off", "everything-set"],
)
def test_the_resolved_toml_reads_back_to_the_same_config(
    tables: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    cfg = parse_config(tables)
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


def test_the_library_objects_carry_the_enums_each_library_expects() -> None:
    cfg = parse_config({
        "training": {"optimizer": "adam"},
        "secure_aggregation": {"mode": "hardened", "dropout_tolerance": 0.2},
    })  # fmt: skip
    assert cfg.training.optimizer is OptimizerKind.ADAM
    assert cfg.secure_aggregation.settings is not None
    assert cfg.secure_aggregation.settings.mode is secagg.SecurityMode.HARDENED
    # The DP trainer gets the same choice in dp's own enum, for every choice.
    assert cfg.privacy.optimizer is dp.LocalOptimizer.ADAM
    assert {k.value for k in OptimizerKind} == {k.value for k in dp.LocalOptimizer}


def test_seed_and_max_weight_are_derived_not_keys() -> None:
    cfg = parse_config({"run": {"seed": 7}})
    assert cfg.federation.config.seed == 7
    assert cfg.secure_aggregation.simulation == DropoutSimulation(seed=7)
    assert cfg.secure_aggregation.max_weight_from_data
    assert "max_weight" not in to_tables(cfg)["secure_aggregation"]
    given = parse_config({"secure_aggregation": {"max_weight": 300}})
    assert not given.secure_aggregation.max_weight_from_data
    assert to_tables(given)["secure_aggregation"]["max_weight"] == 300


def test_a_switched_off_table_builds_no_library_config() -> None:
    cfg = parse_config({"privacy": {"enabled": False},
                        "secure_aggregation": {"enabled": False}})  # fmt: skip
    assert cfg.privacy.config is None and cfg.secure_aggregation.settings is None


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"privacy": {"target_epsilom": 2.0}},
         "unknown key privacy.target_epsilom; did you mean 'target_epsilon'?"),
        ({"secure_agregation": {"clip": 1.0}},
         "unknown table [secure_agregation]; did you mean 'secure_aggregation'?"),
        ({"federation": []}, "[federation] must be a table; found []"),
    ],
    ids=["key", "table", "not-a-table"],
)
def test_unknown_names_are_refused_with_the_nearest(
    tables: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(tables)


def test_overrides_set_and_unset_on_the_raw_tables() -> None:
    raw = {"privacy": {"target_epsilon": 4.0}}
    tables = apply_overrides(
        raw, ["privacy.noise_multiplier=1.0", "data.label=outcome"],
        ["privacy.target_epsilon"],
    )  # fmt: skip
    assert tables == {"privacy": {"noise_multiplier": 1.0},
                      "data": {"label": "outcome"}}  # fmt: skip
    assert raw == {"privacy": {"target_epsilon": 4.0}}, "the input was changed"
    cfg = parse_config(tables)
    assert cfg.privacy.config is not None
    assert cfg.privacy.config.noise_multiplier == 1.0
    assert cfg.privacy.config.target_epsilon is None


@pytest.mark.parametrize(
    ("sets", "unsets", "message"),
    [
        (["rounds"], [], r"--set needs TABLE.KEY=VALUE .*; found 'rounds'"),
        (["=3"], [], r"--set needs TABLE.KEY=VALUE .*; found '=3'"),
        ([], ["privacy"], r"--unset needs TABLE.KEY .*; found 'privacy'"),
    ],
)
def test_malformed_overrides_are_refused(
    sets: list[str], unsets: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides({}, sets, unsets)
