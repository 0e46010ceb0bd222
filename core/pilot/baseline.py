"""The model a pilot builds, its centralised baseline, and how both are scored.

The baseline is non-private SGD on the pooled training rows with the same
model, initial weights, batch size and learning rate as the federation, one
round's epochs per point, so the report can show what federation and privacy
cost against training where all the data sits in one place.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core import data as cdata
from core.errors import FederationError
from core.evaluation import evaluate
from core.interfaces import ClientUpdate, TrainTask
from core.params import ParamSpec
from core.pilot.data import PilotData
from core.pilot.report import TestScores
from core.pilot.schema import PilotConfig
from core.pilot.sections import ModelKind
from core.trainer import LocalTrainer

__all__ = ["build_model", "centralised_baseline", "score_model"]

Curve = list[tuple[int, float, float]]


def build_model(cfg: PilotConfig, num_features: int, num_classes: int) -> nn.Module:
    """The initial global model (seeded by ``run.seed``)."""
    torch.manual_seed(cfg.run.seed)
    m = cfg.model
    if m.kind is ModelKind.LOGISTIC:
        return nn.Sequential(nn.Linear(num_features, num_classes))
    layers: list[nn.Module] = []
    width = num_features
    for _ in range(m.hidden_layers):
        layers += [nn.Linear(width, m.hidden_units), nn.ReLU()]
        width = m.hidden_units
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def centralised_baseline(
    cfg: PilotConfig, model: nn.Module, data: PilotData
) -> tuple[nn.Module, Curve]:
    """The pooled, non-private model and its (round, loss, accuracy) curve."""
    trainer = LocalTrainer(model, config=cfg.training, seed=cfg.run.seed)
    spec = ParamSpec.from_module(model)
    params = spec.flatten(model)
    pooled = cdata.to_dataset(0, data.table.x_train, data.table.y_train)
    final = build_model(cfg, data.table.num_features, data.table.num_classes)
    curve: Curve = []
    for r in range(1, cfg.federation.config.rounds + 1):
        out = trainer.train(
            TrainTask(round_index=r, client_id=0, global_params=params, data=pooled)
        )
        if not isinstance(out, ClientUpdate):  # the plain trainer never declines
            raise FederationError(f"the plain trainer declined: {out.reason}")
        params = params + out.delta
        spec.load_into(final, params)
        ev = evaluate(final, data.test)
        curve.append((r, ev.loss, ev.accuracy or 0.0))
    return final, curve


def score_model(model: nn.Module, data: PilotData) -> TestScores:
    """Accuracy, mean per-class recall and (binary) ROC AUC on the test rows."""
    with torch.no_grad():
        prob = torch.softmax(model(data.test.features), dim=1).numpy()
    y, pred = data.table.y_test, prob.argmax(axis=1)
    recalls = [
        float(np.mean(pred[y == c] == c))
        for c in range(data.table.num_classes)
        if np.any(y == c)
    ]
    auc = None
    if data.table.num_classes == 2 and 0 < y.sum() < len(y):
        # Mann-Whitney U with average ranks for ties: no scikit-learn needed.
        _, inverse, counts = np.unique(
            prob[:, 1], return_inverse=True, return_counts=True
        )
        ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
        pos = int(y.sum())
        auc = float(
            (ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos))
        )
    return TestScores(
        accuracy=float(np.mean(pred == y)),
        balanced_accuracy=float(np.mean(recalls)),
        roc_auc=auc,
    )
