"""Evaluation on a held-out set and per client."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core import DataError, ParamSpec, count_correct, evaluate, evaluate_per_client
from tests.core.kit import Kit


def test_count_correct_for_class_scores_single_logits_and_regression() -> None:
    scores = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert count_correct(scores, torch.tensor([0, 1, 1])) == 2
    logits = torch.tensor([[1.5], [-0.2], [0.3]])
    assert count_correct(logits, torch.tensor([1.0, 0.0, 0.0])) == 2
    assert count_correct(torch.zeros(3, 2, 2), torch.zeros(3)) is None


def test_evaluate_matches_a_hand_computed_loss_and_restores_train_mode(
    kit: Kit,
) -> None:
    data = kit.clients(1, rows=30)[0]
    model = nn.Sequential(nn.Linear(kit.num_features, 2), nn.Dropout(0.5))
    model.train()
    result = evaluate(model, data, batch_size=7)
    model.eval()
    with torch.no_grad():
        out = model(data.features)
    expected = nn.functional.cross_entropy(out, data.labels).item()
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert result.accuracy == pytest.approx(
        (out.argmax(1) == data.labels).float().mean().item()
    )
    assert result.num_examples == 30
    model.train()
    assert model.training


def test_evaluate_per_client_skips_empty_clients_and_refuses_empty_sets(
    kit: Kit,
) -> None:
    clients = kit.clients(2)
    empty = kit.empty_client(5)
    model = nn.Linear(kit.num_features, 2)
    spec = ParamSpec.from_module(model)
    results = evaluate_per_client(model, spec, spec.zeros(), [*clients, empty])
    assert sorted(results) == [0, 1]
    # Zero weights give equal scores: the loss is log 2 for every client.
    assert all(r.loss == pytest.approx(0.6931, abs=1e-4) for r in results.values())
    with pytest.raises(DataError, match="client 5 has no examples to evaluate on"):
        evaluate(model, empty)
