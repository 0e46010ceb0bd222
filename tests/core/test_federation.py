"""The federation loop: bad clients, declines, aborts, metrics and reporting."""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from core import PlainAggregator
from core.errors import ConfigError, FederationError
from tests.core.kit import Kit


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_update_is_rejected_logged_and_never_aggregated(
    kit: Kit, bad: float, caplog: pytest.LogCaptureFixture
) -> None:
    model = kit.model()
    trainer = kit.PoisoningTrainer(kit.trainer(model), {1: bad})
    fed = kit.federation(model=model, trainer=trainer)
    with caplog.at_level(logging.WARNING, logger="core.federation"):
        result = fed.run()
    assert torch.isfinite(result.params).all()
    for record in result.history:
        assert record.num_aggregated == 3 and record.cohort == (0, 1, 2, 3)
        assert record.skipped == {1: "rejected: update holds NaN or inf"}
    assert "round 1: client 1 skipped: rejected: update holds NaN or inf" in caplog.text


def test_client_without_data_is_skipped_once_with_a_reason(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    clients = [*kit.clients(3), kit.empty_client(7)]
    with caplog.at_level(logging.WARNING, logger="core.federation"):
        result = kit.federation(clients=clients, rounds=3).run()
    first, *later = result.history
    assert first.skipped == {7: "no training data"} and first.num_aggregated == 3
    assert all(7 not in r.cohort for r in later), "an empty client was sampled again"
    assert "client 7 skipped: no training data" in caplog.text


def test_federation_stops_with_a_final_message_when_no_client_can_train(
    kit: Kit, tmp_path: Path
) -> None:
    model = kit.model()
    trainer = kit.BudgetTrainer(kit.trainer(model), budget=2)
    stream = io.StringIO()
    result = kit.federation(
        model=model, trainer=trainer, rounds=10, run_dir=tmp_path, stream=stream
    ).run()
    message = (
        "federation stopped after round 3 of 10: no client can train any more "
        "(privacy budget exhausted (4 clients))"
    )
    assert result.stopped_early == message
    assert result.rounds_completed == 3
    assert result.history[2].aborted == "no client update to aggregate"
    assert set(result.history[2].skipped.values()) == {
        "declined: privacy budget exhausted"
    }
    assert stream.getvalue().rstrip().endswith(message)
    lines = [
        json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert lines[-1] == {"type": "stopped", "reason": message}


def test_round_aborted_by_the_aggregator_leaves_the_model_unchanged(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    fed = kit.federation(aggregator=kit.AbortingAggregator([2]), rounds=3)
    fed.run_round()
    after_one = fed.params
    with caplog.at_level(logging.WARNING, logger="core.federation"):
        aborted = fed.run_round()
    assert torch.equal(fed.params, after_one)
    assert aborted.aborted == "2 survivors, threshold 3"
    assert aborted.num_aggregated == 0
    assert "round 2 aborted, model unchanged: 2 survivors, threshold 3" in caplog.text
    fed.run_round()
    assert not torch.equal(fed.params, after_one), "the run did not carry on"


class MetricsOnlyAggregator(PlainAggregator):
    """Returns its own aggregate metrics, ignoring the clients' ones."""

    def aggregate(self, context, updates):  # type: ignore[no-untyped-def]
        result = super().aggregate(context, updates)
        return type(result)(
            mean_delta=result.mean_delta,
            total_weight=result.total_weight,
            num_aggregated=result.num_aggregated,
            dropped=(3,),
            bytes_up=2048,
            bytes_down=1000,
            metrics={"epsilon": 1.5},
        )


def test_loop_reports_only_the_aggregators_metrics(kit: Kit, tmp_path: Path) -> None:
    stream = io.StringIO()
    result = kit.federation(
        aggregator=MetricsOnlyAggregator(), rounds=2, run_dir=tmp_path, stream=stream
    ).run()
    assert all(r.metrics == {"epsilon": 1.5} for r in result.history)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, "one console line per round"
    assert lines[0].startswith("[round 1/2] test loss ")
    for part in ("clients 4/4", "dropped 1", "up 2.0 kB down 1.0 kB", "epsilon 1.5"):
        assert part in lines[0]
    assert "train loss" not in lines[0]


def test_metrics_jsonl_has_a_header_then_one_line_per_round(
    kit: Kit, tmp_path: Path
) -> None:
    kit.federation(rounds=3, run_dir=tmp_path, fraction_fit=0.5).run()
    rows = [
        json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    header, *rounds = rows
    assert header["type"] == "header" and header["config"]["rounds"] == 3
    assert header["num_clients"] == 4 and header["resumed_from_round"] is None
    assert header["trainer"] == "LocalTrainer"
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(len(r["cohort"]) == 2 for r in rounds)
    assert all(0 <= r["eval_accuracy"] <= 1 for r in rounds)
    assert set(rounds[0]["metrics"]) == {"train_accuracy", "train_loss"}


def test_duplicate_client_ids_are_refused(kit: Kit) -> None:
    data = kit.clients(2)
    with pytest.raises(ConfigError, match=r"client ids must be unique; found \[0, 0\]"):
        kit.federation(clients=[data[0], data[0]])


def test_a_federation_without_clients_is_refused(kit: Kit) -> None:
    with pytest.raises(ConfigError, match="needs at least one client; found none"):
        kit.federation(clients=[])


def test_checkpoint_without_a_path_or_run_dir_is_refused(kit: Kit) -> None:
    with pytest.raises(ConfigError, match="no checkpoint path given and the "
                       "federation has no run_dir"):  # fmt: skip
        kit.federation().save_checkpoint()


def test_run_round_after_exhaustion_raises(kit: Kit) -> None:
    model = kit.model()
    fed = kit.federation(
        model=model, trainer=kit.BudgetTrainer(kit.trainer(model), budget=0), rounds=5
    )
    fed.run_round()
    with pytest.raises(FederationError, match="no client can train any more"):
        fed.run_round()


BAD_METRIC = "rejected: metric train_loss is NaN or inf"


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        ({"bad_metric": {2: float("nan")}}, BAD_METRIC),
        ({"bad_metric": {2: float("-inf")}}, BAD_METRIC),
        ({"zero_weight": [2]}, "rejected: update claims no examples (a weight of 0)"),
    ],
    ids=["nan-metric", "inf-metric", "zero-examples"],
)
def test_a_bad_metric_or_zero_count_is_a_skipped_client_and_a_logged_round(
    kit: Kit,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    poison: dict[str, Any],
    reason: str,
) -> None:
    model = kit.model()
    trainer = kit.PoisoningTrainer(kit.trainer(model), {}, **poison)
    fed = kit.federation(model=model, trainer=trainer, rounds=2, run_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="core.federation"):
        result = fed.run()
    assert result.rounds_completed == 2 and result.stopped_early is None
    for record in result.history:
        assert record.skipped == {2: reason} and record.num_aggregated == 3
        assert all(math.isfinite(v) for v in record.metrics.values())
    assert torch.isfinite(result.params).all()
    assert f"round 1: client 2 skipped: {reason}" in caplog.text
    rounds = [
        json.loads(x)
        for x in (tmp_path / "metrics.jsonl").read_text().splitlines()[1:]
    ]
    assert [r["skipped"] for r in rounds] == [{"2": reason}] * 2
