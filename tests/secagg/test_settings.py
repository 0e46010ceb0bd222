"""SecAggSettings: one validation of every setting, sessions per cohort, and a
client policy that accepts exactly the sessions the settings build."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from secagg import (
    COMPLETE_GRAPH_BELOW,
    MAX_RING_BITS,
    ClientPolicy,
    ConfigError,
    GraphKind,
    PolicyViolation,
    SecAggConfig,
    SecAggSettings,
    SecurityMode,
)

HARD = SecurityMode.HARDENED
SEMI = SecurityMode.SEMI_HONEST


def test_defaults_and_required_max_weight() -> None:
    s = SecAggSettings(max_weight=100)
    assert (s.clip, s.value_bits, s.ring_bits, s.mode) == (1.0, 16, 32, SEMI)
    assert (s.dropout_tolerance, s.corrupt_fraction) == (0.3, 0.0)
    assert s.complete_below == COMPLETE_GRAPH_BELOW
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.clip = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"clip": 0.0}, r"^clip must be finite and > 0, got 0.0$"),
        ({"clip": float("inf")}, r"^clip must be finite and > 0, got inf$"),
        ({"clip": "1"}, r"^clip must be a number, got '1'$"),
        ({"ring_bits": 7}, r"^ring_bits must be in \[8, 62\], got 7$"),
        ({"ring_bits": MAX_RING_BITS + 1}, r"^ring_bits must be in \[8, 62\], got 63$"),
        ({"ring_bits": 32.0}, r"^ring_bits must be an int, got 32.0$"),
        ({"value_bits": 1}, r"^value_bits must be in \[2, 32\], got 1$"),
        ({"value_bits": True}, r"^value_bits must be an int, got True$"),
        ({"max_weight": 0}, r"^max_weight must be >= 1, got 0$"),
        (
            {"max_weight": 2**20},
            r"^ring_bits must be >= value_bits \+ bits of max_weight \+ 1 = 38 even "
            r"for the smallest cohort, got 32$",
        ),
        ({"mode": "hardened"}, r"^mode must be a SecurityMode, got 'hardened'$"),
        (
            {"dropout_tolerance": 1.0},
            r"^dropout_tolerance must be in \[0, 1\), got 1.0$",
        ),
        (
            {"corrupt_fraction": -0.1},
            r"^corrupt_fraction must be in \[0, 1\), got -0.1$",
        ),
        (
            {"corrupt_fraction": 0.5, "dropout_tolerance": 0.45},
            r"^corrupt_fraction \+ dropout_tolerance must be <= 0.9 \(semi-honest\)",
        ),
        (
            {"mode": HARD, "corrupt_fraction": 0.2, "dropout_tolerance": 0.4},
            r"^corrupt_fraction \+ 2·dropout_tolerance must be <= 0.9 \(hardened\)",
        ),
        ({"complete_below": 0}, r"^complete_below must be >= 1, got 0$"),
    ],
)
def test_each_setting_is_validated_naming_field_and_value(
    kw: dict[str, Any], message: str
) -> None:
    kw.setdefault("max_weight", 100)
    with pytest.raises(ConfigError, match=message):
        SecAggSettings(**kw)


def test_numbers_are_normalised_to_float() -> None:
    s = SecAggSettings(max_weight=3, clip=2, dropout_tolerance=0)
    assert isinstance(s.clip, float) and isinstance(s.dropout_tolerance, float)


def test_from_dict_accepts_mode_by_value() -> None:
    s = SecAggSettings.from_dict({"max_weight": 9, "mode": "hardened", "clip": 0.5})
    assert s == SecAggSettings(max_weight=9, mode=HARD, clip=0.5)
    assert SecAggSettings.from_dict({"max_weight": 9, "mode": SEMI}).mode is SEMI


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"max_weight": 9, "bits": 32},
            r"^unknown secure-aggregation settings \['bits'\]; allowed: clip, "
            r"value_bits, ring_bits, max_weight, mode, dropout_tolerance, "
            r"corrupt_fraction, complete_below$",
        ),
        (
            {"max_weight": 9, "mode": "malicious"},
            r"^mode must be one of 'semi-honest', 'hardened', got 'malicious'$",
        ),
        ({"clip": 1.0}, r"^max_weight is required"),
        ([("max_weight", 9)], r"^settings must be a mapping, got list$"),
    ],
)
def test_from_dict_refuses_with_a_named_error(data: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SecAggSettings.from_dict(data)


def test_session_config_is_for_cohort_of_these_settings() -> None:
    s = SecAggSettings(max_weight=50, clip=0.5, ring_bits=40, corrupt_fraction=0.05)
    cfg = s.session_config(num_clients=30, vector_length=7, context=b"round 3")
    assert cfg == SecAggConfig.for_cohort(
        num_clients=30,
        vector_length=7,
        corrupt_fraction=0.05,
        dropout_fraction=0.3,
        max_weight=50,
        ring_bits=40,
        clip=0.5,
        context=b"round 3",
    )
    assert (cfg.threshold, cfg.context) == (21, b"round 3")


@pytest.mark.parametrize("mode", [SEMI, HARD])
@pytest.mark.parametrize("corrupt", [0.0, 0.05, 0.2])
@pytest.mark.parametrize("n", [2, 3, 10, 99, 499, 500, 1000])
def test_client_policy_accepts_what_session_config_builds(
    mode: SecurityMode, corrupt: float, n: int
) -> None:
    s = SecAggSettings(max_weight=10, mode=mode, corrupt_fraction=corrupt, ring_bits=48)
    if mode is HARD and n == 2:
        # One assumed colluder and one honest client: the sum is that input.
        with pytest.raises(ConfigError, match="needs at least 3 members"):
            s.session_config(num_clients=n, vector_length=3)
        return
    cfg = s.session_config(num_clients=n, vector_length=3)
    s.client_policy().check(cfg)
    assert cfg.graph is (GraphKind.HARARY if n >= 500 else GraphKind.COMPLETE)


@pytest.mark.parametrize("mode", [SEMI, HARD])
def test_default_client_policy_accepts_for_cohort_at_500(mode: SecurityMode) -> None:
    # A policy demanding t >= (k + 1) / 2 on SecAgg+ graphs too would refuse
    # the semi-honest thresholds for_cohort builds from n = 500.
    cfg = SecAggConfig.for_cohort(
        num_clients=500,
        vector_length=3,
        corrupt_fraction=0.0,
        dropout_fraction=0.3,
        max_weight=1,
        mode=mode,
    )
    assert cfg.graph is GraphKind.HARARY
    ClientPolicy().check(cfg)


@pytest.mark.parametrize("mode", [SEMI, HARD])
@pytest.mark.parametrize("n", [10, 500])
def test_client_policy_refuses_a_threshold_one_below(
    mode: SecurityMode, n: int
) -> None:
    # A server announcing the settings' session with a lower threshold.
    s = SecAggSettings(max_weight=10, mode=mode, corrupt_fraction=0.05)
    cfg = s.session_config(num_clients=n, vector_length=3)
    lower = dataclasses.replace(cfg, threshold=cfg.threshold - 1)
    with pytest.raises(PolicyViolation, match=f"threshold {cfg.threshold - 1} "):
        s.client_policy().check(lower)


def test_client_policy_refuses_other_mode_weight_cap_and_dropouts() -> None:
    s = SecAggSettings(max_weight=10, mode=HARD)
    cfg = s.session_config(num_clients=10, vector_length=3)
    policy = s.client_policy()
    semi = dataclasses.replace(cfg, mode=SEMI)
    with pytest.raises(PolicyViolation, match="session mode semi-honest is not"):
        policy.check(semi)
    heavier = dataclasses.replace(cfg, max_weight=11)
    with pytest.raises(PolicyViolation, match="max_weight 11 exceeds this client's"):
        policy.check(heavier)
    policy.check_dropouts(cfg, 7)
    with pytest.raises(PolicyViolation, match="4 of 10 clients are missing"):
        policy.check_dropouts(cfg, 6)


def test_session_config_refuses_a_cohort_its_policy_refuses() -> None:
    # One client: a sum of one is that client's input.
    with pytest.raises(ConfigError, match="a cohort of 1 gives a session clients"):
        SecAggSettings(max_weight=10).session_config(num_clients=1, vector_length=3)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"min_cohort": 0}, r"^min_cohort must be an int >= 1, got 0$"),
        ({"max_weight_cap": "big"}, r"^max_weight_cap must be an int >= 1, got 'big'$"),
        (
            {"assumed_corrupt_fraction": 0.95},
            r"^assumed_corrupt_fraction must be in \[0, 0.9\], got 0.95$",
        ),
        ({"max_dropout_fraction": "x"}, r"^max_dropout_fraction must be in \[0, 1.0\]"),
        ({"mode": "hardened"}, r"^mode must be a SecurityMode or None"),
    ],
)
def test_client_policy_validation(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClientPolicy(**kw)
