"""The plain local trainer: a few epochs of minibatch SGD (or Adam) per round.

`LocalTrainer` implements `core.interfaces.Trainer`. It trains a private copy
of the model, so the caller's model is never touched, and returns
Δ = w_local − w_global with the example count and the training metrics.

Minibatch order comes from the trainer's own seeded torch generator, whose
state is part of `state_dict()`: a resumed federation shuffles exactly as an
uninterrupted one. Shuffling is not a privacy mechanism, so a seeded
generator is fine here (DP-SGD's Poisson sampling lives in `dp`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from core.config import LocalTrainingConfig, OptimizerKind
from core.errors import DataError
from core.evaluation import LossFn, count_correct
from core.interfaces import ClientUpdate, StateDict, TrainOutcome, TrainTask
from core.params import ParamSpec

__all__ = ["LocalTrainer", "make_optimizer"]


def make_optimizer(params: Any, config: LocalTrainingConfig) -> torch.optim.Optimizer:
    """A fresh optimizer for one round of local training."""
    if config.optimizer is OptimizerKind.SGD:
        return torch.optim.SGD(
            params,
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(
        params, lr=config.learning_rate, weight_decay=config.weight_decay
    )


class LocalTrainer:
    """Non-private local training (the `Trainer` the DP trainer replaces).

    Metrics returned per client: ``train_loss`` (mean over every example seen
    in the round) and, for classifiers, ``train_accuracy``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        config: LocalTrainingConfig,
        loss_fn: LossFn = nn.functional.cross_entropy,
        seed: int = 0,
    ) -> None:
        self.config = config
        self._model = copy.deepcopy(model)
        self._spec = ParamSpec.from_module(self._model)
        self._loss_fn = loss_fn
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def spec(self) -> ParamSpec:
        """The layout of the flat parameters this trainer reads and writes."""
        return self._spec

    def train(self, task: TrainTask) -> TrainOutcome:
        """Run `config.local_epochs` epochs on `task.data`; return Δ and metrics."""
        data = task.data
        n = data.num_examples
        if n == 0:
            raise DataError(
                f"client {data.client_id} has no examples; the federation loop "
                "skips such clients before training"
            )
        model = self._model
        self._spec.load_into(model, task.global_params)
        model.train()
        optimizer = make_optimizer(model.parameters(), self.config)
        batch = n if self.config.batch_size == 0 else min(self.config.batch_size, n)
        device = self._spec.flat_device
        loss_sum, correct, seen = 0.0, 0, 0
        has_accuracy = True
        for _ in range(self.config.local_epochs):
            order = torch.randperm(n, generator=self._generator)
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                # Data may live on the CPU while the model is on a GPU.
                x = data.features[idx].to(device)
                y = data.labels[idx].to(device)
                optimizer.zero_grad(set_to_none=True)
                out = model(x)
                loss = self._loss_fn(out, y)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                loss_sum += float(loss.detach()) * len(idx)
                seen += len(idx)
                batch_correct = count_correct(out.detach(), y)
                has_accuracy = has_accuracy and batch_correct is not None
                correct += batch_correct or 0
        delta = self._spec.flatten(model) - task.global_params
        metrics = {"train_loss": loss_sum / seen}
        if has_accuracy:
            metrics["train_accuracy"] = correct / seen
        return ClientUpdate(
            client_id=data.client_id, delta=delta, num_examples=n, metrics=metrics
        )

    def state_dict(self) -> StateDict:
        """The shuffling generator's state."""
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the shuffling generator."""
        self._generator.set_state(state["generator"])
