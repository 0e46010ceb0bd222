"""One error family: every refusal of core's public API is a `FederationError`
subclass named after the failure, with a message naming what was wrong."""

from __future__ import annotations

import inspect

import pytest
import torch

import core
from core import (
    AggregateResult,
    CheckpointMismatchError,
    ClientDataset,
    ClientUpdate,
    DataError,
    FederationError,
    InvalidUpdateError,
    PlainAggregator,
    ServerOptimizer,
)
from core import errors as core_errors


def test_every_exported_error_belongs_to_the_family() -> None:
    errors = [
        obj
        for name in core_errors.__all__
        if isinstance(obj := getattr(core_errors, name), type)
    ]
    assert all(issubclass(e, FederationError) for e in errors)
    assert {e.__name__ for e in errors} <= set(core.__all__)
    # Each refusal that describes a bad value is a ValueError too, for
    # generic handlers; RoundAborted is an event, not a bad value.
    assert all(
        issubclass(e, ValueError)
        for e in errors
        if e not in {FederationError, core.RoundAborted}
    )
    assert all(inspect.getdoc(e) for e in errors)


def test_client_rows_must_match() -> None:
    with pytest.raises(
        DataError,
        match="ClientDataset 3: features has 4 rows but labels has 3; they must "
        "be equal",
    ):
        ClientDataset(
            client_id=3, features=torch.zeros(4, 2), labels=torch.zeros(3)
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delta": torch.zeros(2, 2)}, r"delta must be a 1-D tensor; found shape "
         r"\(2, 2\)"),
        ({"num_examples": -1}, "num_examples must be >= 0; found -1"),
    ],
    ids=["matrix-delta", "negative-count"],
)
def test_a_malformed_update_is_refused(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "client_id": 1, "delta": torch.zeros(3), "num_examples": 5, **kwargs
    }
    with pytest.raises(InvalidUpdateError, match=message):
        ClientUpdate(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mean_delta": torch.zeros(1, 3)}, "mean_delta must be a 1-D tensor"),
        ({"num_aggregated": 0}, r"num_aggregated must be >= 1 \(raise RoundAborted"),
    ],
    ids=["matrix-mean", "nothing-aggregated"],
)
def test_a_malformed_aggregate_is_refused(
    kwargs: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {
        "mean_delta": torch.zeros(3), "total_weight": 2.0, "num_aggregated": 1,
        **kwargs,
    }
    with pytest.raises(InvalidUpdateError, match=message):
        AggregateResult(**fields)  # type: ignore[arg-type]


def test_foreign_component_state_is_refused() -> None:
    with pytest.raises(
        CheckpointMismatchError, match="PlainAggregator has no state; found keys x"
    ):
        PlainAggregator().load_state_dict({"x": 1})
    with pytest.raises(
        CheckpointMismatchError, match="momentum_buffer must be a tensor or None; "
        "found list"
    ):
        ServerOptimizer(learning_rate=1.0).load_state_dict({"momentum_buffer": [1]})
