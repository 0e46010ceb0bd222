"""Bad configuration names the field, the allowed values and the value found."""

from __future__ import annotations

import pytest

from core import ConfigError, FederationConfig, LocalTrainingConfig, OptimizerKind


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rounds": 0}, "FederationConfig.rounds must be >= 1; found 0"),
        ({"rounds": True}, "FederationConfig.rounds must be an int; found True"),
        (
            {"rounds": 2, "fraction_fit": 1.5},
            r"FederationConfig.fraction_fit must be in \(0, 1\]; found 1.5",
        ),
        (
            {"rounds": 2, "fraction_fit": 0.0},
            r"FederationConfig.fraction_fit must be in \(0, 1\]; found 0.0",
        ),
        (
            {"rounds": 2, "server_momentum": 1.0},
            r"FederationConfig.server_momentum must be in \[0, 1\); found 1.0",
        ),
        (
            {"rounds": 2, "server_learning_rate": float("nan")},
            "FederationConfig.server_learning_rate must be finite; found nan",
        ),
        (
            {"rounds": 2, "min_fit_clients": "3"},
            "FederationConfig.min_fit_clients must be an int; found '3'",
        ),
    ],
)
def test_federation_config_names_the_bad_field(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        FederationConfig(**kwargs)  # type: ignore[arg-type]


def test_enum_fields_refuse_strings_and_list_the_allowed_values() -> None:
    with pytest.raises(
        ConfigError,
        match=r"LocalTrainingConfig.optimizer must be an OptimizerKind member "
        r"\(one of 'sgd', 'adam'\); found 'sgd'",
    ):
        LocalTrainingConfig(optimizer="sgd")  # type: ignore[arg-type]


def test_from_dict_refuses_unknown_fields_with_the_allowed_ones() -> None:
    with pytest.raises(
        ConfigError,
        match="FederationConfig has no field 'roundz'; allowed fields: rounds, "
        "fraction_fit, min_fit_clients",
    ):
        FederationConfig.from_dict({"roundz": 3})


def test_from_dict_coerces_enum_values_and_refuses_unknown_ones() -> None:
    config = LocalTrainingConfig.from_dict({"optimizer": "adam", "batch_size": 0})
    assert config.optimizer is OptimizerKind.ADAM and config.batch_size == 0
    with pytest.raises(
        ConfigError,
        match=r"LocalTrainingConfig\.optimizer must be one of 'sgd', 'adam'; "
        r"found 'rmsprop'",
    ):
        LocalTrainingConfig.from_dict({"optimizer": "rmsprop"})


def test_cross_field_check_momentum_needs_sgd() -> None:
    with pytest.raises(
        ConfigError,
        match=r"LocalTrainingConfig\.momentum must be 0 unless optimizer is 'sgd'; "
        r"found 0\.9 with optimizer 'adam'",
    ):
        LocalTrainingConfig(optimizer=OptimizerKind.ADAM, momentum=0.9)


def test_configs_are_frozen() -> None:
    config = FederationConfig(rounds=1)
    with pytest.raises(AttributeError):
        config.rounds = 2  # type: ignore[misc]
