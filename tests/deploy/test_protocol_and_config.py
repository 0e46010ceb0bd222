"""Wire format, ``[engine]`` table, settings and roster: every refusal named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import secagg
from core.config import LocalTrainingConfig
from core.errors import ConfigError
from core.flower.engine import EngineKind, parse_engine
from core.flower.errors import DeploymentConfigError, WireError
from core.flower.protocol import LedgerHead, Stage, StageReply, StageRequest
from core.flower.roster import (
    load_identity_key,
    load_roster,
    write_identity_key,
    write_roster,
)
from core.flower.settings import AppSettings, unflatten
from core.pilot.schema import parse_config


def test_request_and_reply_round_trip() -> None:
    q = StageRequest(stage=Stage.TRAIN, round_index=3, payload=b"m", cohort=4)
    assert StageRequest.from_fields(q.to_fields()) == q
    r = StageReply(
        stage=Stage.UNMASKING,
        round_index=3,
        institution=2,
        payload=b"x",
        ledger=LedgerHead(entries=5, sha256="0" * 64),
    )
    assert StageReply.from_fields(r.to_fields()) == r
    bare = StageReply(stage=Stage.TRAIN, round_index=1, institution=0, payload=b"")
    assert StageReply.from_fields(bare.to_fields()).ledger is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_examples": 112}, r"extra \['num_examples'\]"),
        ({"train_loss": 0.3}, r"extra \['train_loss'\]"),
        ({"stage": "fit"}, "stage must be one of"),
        ({"round": -1}, "'round' must be an integer >= 0"),
        ({"round": True}, "'round' must be an integer >= 0"),
        ({"payload": "text"}, "'payload' must be bytes"),
        ({"ledger-head": "nothex"}, "SHA-256 hex"),
    ],
)
def test_a_reply_with_anything_else_is_refused(change, message) -> None:
    fields = StageReply(stage=Stage.TRAIN, round_index=1, institution=0,
                        payload=b"", ledger=LedgerHead(entries=1, sha256="a" * 64)
                        ).to_fields()  # fmt: skip
    fields.update(change)
    with pytest.raises(WireError, match=message):
        StageReply.from_fields(fields)


def test_a_request_missing_a_field_is_refused() -> None:
    fields = StageRequest(stage=Stage.TRAIN, round_index=1, payload=b"").to_fields()
    del fields["cohort"]
    with pytest.raises(WireError, match=r"missing \['cohort'\]"):
        StageRequest.from_fields(fields)


def test_engine_table() -> None:
    assert parse_engine({}).kind is EngineKind.IN_PROCESS
    eng = parse_engine({"kind": "flower-deployment", "stage_timeout": 5})
    assert eng.kind is EngineKind.FLOWER_DEPLOYMENT and eng.stage_timeout == 5


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"kind": "grpc"}, "engine.kind must be one of 'in-process'"),
        ({"stage_timout": 3}, "unknown key engine.stage_timout; allowed:"),
        ({"stage_timeout": 0}, "engine.stage_timeout must be a number of seconds"),
        ({"min_nodes": -1}, "engine.min_nodes must be an integer >= 0"),
        ({"num_classes": 1}, "engine.num_classes must be >= 2"),
        ({"test_data": "t.csv"}, "engine.test_label must name the label column"),
    ],
)
def test_engine_refusals_name_the_key(table, message) -> None:
    with pytest.raises(DeploymentConfigError, match=message) as info:
        parse_engine(table)
    assert isinstance(info.value, ConfigError)  # the core family


def test_settings_are_the_pilot_schemas_objects() -> None:
    flat = {
        "federation.rounds": 3, "training.learning_rate": 1,
        "secure_aggregation.max_weight": 64, "engine.kind": "flower-simulation",
    }  # fmt: skip
    s = AppSettings.from_run_config(flat)
    pilot = parse_config(unflatten(flat))
    # The same objects, names and defaults as `fedshield run`.
    assert s.pilot == pilot
    assert s.training == LocalTrainingConfig(learning_rate=1.0)
    assert s.secagg == secagg.SecAggSettings(max_weight=64)
    assert s.dp == pilot.privacy.config and s.dp is not None
    assert (s.federation.rounds, s.engine.kind) == (3, EngineKind.FLOWER_SIMULATION)


def test_an_empty_string_leaves_a_key_unset() -> None:
    s = AppSettings.from_run_config({
        "privacy.noise_multiplier": 1.5, "privacy.target_epsilon": "",
        "secure_aggregation.max_weight": 64,
    })  # fmt: skip
    assert s.dp is not None
    assert (s.dp.noise_multiplier, s.dp.target_epsilon) == (1.5, None)


@pytest.mark.parametrize(
    ("flat", "message"),
    [
        ({"federation.rounds": 0}, r"^federation\.rounds"),
        ({"secure_aggregation.mode": "paranoid"},
         r"secure_aggregation\.mode must be one of"),
        ({"federation.roundz": 3}, r"did you mean 'rounds'"),
        ({"rounds": 3}, r"must be TABLE\.KEY"),
        ({"secure_aggregation.enabled": False},
         r"secure_aggregation\.enabled must be true"),
        ({"federation.rounds": 2}, r"secure_aggregation\.max_weight must be set"),
        ({"secure_aggregation.max_weight": 1 << 20},
         r"ring_bits must be >= value_bits \+ bits of max_weight"),
    ],
)  # fmt: skip
def test_settings_refusals(flat, message) -> None:
    with pytest.raises(ConfigError, match=message):
        AppSettings.from_run_config(flat)


def test_the_model_needs_its_input_size() -> None:
    settings = AppSettings.from_run_config({"secure_aggregation.max_weight": 8})
    with pytest.raises(DeploymentConfigError, match=r"engine\.num_features must be"):
        settings.build_model()


def test_roster_and_identity_round_trip(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    write_identity_key(tmp_path / "id.pem", key)
    assert (tmp_path / "id.pem").stat().st_mode & 0o777 == 0o600
    loaded = load_identity_key(tmp_path / "id.pem")
    raw = key.public_key().public_bytes_raw()
    assert loaded.public_key().public_bytes_raw() == raw
    write_roster(tmp_path / "roster.json", {4: ("bank-d", raw)})
    roster = load_roster(tmp_path / "roster.json")
    assert roster.consortium.ids == (4,) and roster.names[4] == "bank-d"


def _roster(tmp_path: Path, body: object) -> Path:
    path = tmp_path / "roster.json"
    path.write_text(json.dumps(body))
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"version": 2, "members": []}, "must be an object with version 1"),
        ({"version": 1, "members": []}, "lists no members"),
        ({"version": 1, "members": [{"id": 1}]}, "each member must be"),
        (
            {"version": 1, "members": [{"id": 1, "name": "a", "ed25519": "zz"}]},
            "is not hex",
        ),
        (
            {"version": 1, "members": [{"id": 1, "name": "a", "ed25519": "00"}]},
            "identity keys must be 32 raw Ed25519 bytes",
        ),
    ],
)
def test_roster_refusals(tmp_path: Path, body, message) -> None:
    with pytest.raises(DeploymentConfigError, match=message):
        load_roster(_roster(tmp_path, body))


def test_duplicate_member_and_missing_files(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    m = {"id": 1, "name": "a", "ed25519": key}
    with pytest.raises(DeploymentConfigError, match="lists id 1 twice"):
        load_roster(_roster(tmp_path, {"version": 1, "members": [m, m]}))
    with pytest.raises(DeploymentConfigError, match="does not exist"):
        load_roster(tmp_path / "none.json")
    with pytest.raises(DeploymentConfigError, match="does not exist"):
        load_identity_key(tmp_path / "none.pem")
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(DeploymentConfigError, match="is not an unencrypted PEM"):
        load_identity_key(tmp_path / "bad.pem")
