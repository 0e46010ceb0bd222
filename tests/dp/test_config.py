"""One negative test per configuration and accounting-input error path."""

from __future__ import annotations

import math

import pytest

import dp
from tests.dp import kit


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (
            {"accountant": dp.Accountant.RDP},
            dp.UnsupportedAccountantError,
            "accountant=RDP cannot state ε under neighbouring=REPLACE_ONE",
        ),
        (
            {"accountant": dp.Accountant.PRV},
            dp.UnsupportedAccountantError,
            "accountant=PRV cannot state ε under neighbouring=REPLACE_ONE",
        ),
        (
            {"neighbouring": "replace_one"},
            dp.DPConfigError,
            "neighbouring must be a member of Neighbouring (REPLACE_ONE, ADD_REMOVE); "
            "found 'replace_one'",
        ),
        (
            {"accountant": "pld"},
            dp.DPConfigError,
            "accountant must be a member of Accountant (RDP, PRV, PLD); found 'pld'",
        ),
        (
            {"release_loss": 1},
            dp.DPConfigError,
            "release_loss must be True or False; found 1",
        ),
        (
            {"loss_bound": 2.0},
            dp.DPConfigError,
            "loss_bound and loss_noise_multiplier apply only with release_loss=True",
        ),
        (
            {"release_loss": True, "loss_noise_multiplier": 1.0},
            dp.DPConfigError,
            "loss_bound must be a real number; found None",
        ),
        (
            {
                "release_loss": True,
                "loss_bound": 2.0,
                "loss_noise_multiplier": math.inf,
            },
            dp.DPConfigError,
            "loss_noise_multiplier must be finite and > 0; found inf",
        ),
        (
            {
                "release_loss": True,
                "loss_bound": 2.0,
                "loss_noise_multiplier": 1.0,
                **kit.OPACUS_RDP,
            },
            dp.DPConfigError,
            "release_loss needs neighbouring=REPLACE_ONE: the released mean divides "
            "by the example count, which ADD_REMOVE treats as secret",
        ),
    ],
)
def test_bad_settings_are_refused(
    overrides: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        kit.config(**overrides)
    assert type(info.value) is error
    assert str(info.value).startswith(message)


def test_defaults_are_replace_one_pld_and_no_metric() -> None:
    cfg = kit.config()
    assert cfg.neighbouring is dp.Neighbouring.REPLACE_ONE
    assert cfg.accountant is dp.Accountant.PLD
    assert cfg.release_loss is False and cfg.loss_bound is None
    # Opacus's accountants remain available where they apply.
    assert kit.config(**kit.OPACUS_RDP).accountant is dp.Accountant.RDP


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0.0, 0.1, 1), dp.InvalidNoiseMultiplierError, "noise_multiplier must be"),
        ((1.0, 0.0, 1), dp.DPConfigError, "sample_rate must be in (0, 1]; found 0.0"),
        ((1.0, 1.5, 1), dp.DPConfigError, "sample_rate must be in (0, 1]; found 1.5"),
        ((1.0, 0.1, 0), dp.DPConfigError, "steps must be an integer >= 1; found 0"),
        ((1.0, 0.1, 2.0), dp.DPConfigError, "steps must be an integer >= 1; found 2.0"),
        (
            (1.0, 0.1, 1, "dpsgd"),
            dp.DPConfigError,
            "mechanism must be a Mechanism; found 'dpsgd'",
        ),
        (
            (1.0, 0.5, 1, dp.Mechanism.GAUSSIAN_BOUNDED_SUM),
            dp.DPConfigError,
            "a GAUSSIAN_BOUNDED_SUM release has sample_rate 1; found 0.5",
        ),
    ],
)
def test_bad_runs_are_refused(
    args: tuple[object, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        dp.StepRun(*args)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("delta", [0.0, 1.0, math.nan, "1e-5"])
def test_bad_delta_for_accounting_is_refused(delta: object) -> None:
    with pytest.raises(dp.InvalidDeltaError, match="delta must be"):
        dp.epsilon_for_history(
            [dp.StepRun(1.0, 0.1, 1)],
            delta,  # type: ignore[arg-type]
            dp.Accountant.PLD,
            neighbouring=dp.Neighbouring.REPLACE_ONE,
        )
    with pytest.raises(dp.InvalidDeltaError, match="delta must be"):
        dp.epsilon_lower_bound(
            [dp.StepRun(1.0, 0.1, 1)],
            delta,  # type: ignore[arg-type]
            neighbouring=dp.Neighbouring.REPLACE_ONE,
        )


def test_a_history_of_other_things_is_refused() -> None:
    with pytest.raises(
        dp.DPConfigError, match=r"a history holds StepRun items; found \(1.0, 0.1, 1\)"
    ):
        dp.epsilon_for_history(
            [(1.0, 0.1, 1)],  # type: ignore[list-item]
            1e-5,
            dp.Accountant.PLD,
            neighbouring=dp.Neighbouring.REPLACE_ONE,
        )


def test_public_names_resolve_and_unknown_ones_raise_attribute_error() -> None:
    for name in dp.__all__:
        assert getattr(dp, name) is not None
    assert dp.LedgerCorrupted is dp.LedgerCorruptedError
    with pytest.raises(AttributeError, match="module 'dp' has no attribute 'Nope'"):
        dp.Nope  # type: ignore[attr-defined]  # noqa: B018
