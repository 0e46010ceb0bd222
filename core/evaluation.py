"""Evaluation of a model on a held-out set, and on each client's data.

Classification accuracy is computed from the model's outputs: class scores of
shape ``(N, C)`` with C ≥ 2 are compared by argmax, a single logit of shape
``(N,)`` or ``(N, 1)`` by its sign. Other outputs (regression) get no
accuracy.

>>> import torch
>>> count_correct(torch.tensor([[0.1, 0.9], [2.0, 1.0]]), torch.tensor([1, 1]))
1
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.errors import DataError
from core.interfaces import ClientDataset
from core.params import ParamSpec

__all__ = [
    "EvalResult",
    "LossFn",
    "count_correct",
    "evaluate",
    "evaluate_per_client",
]

#: A loss that averages over the batch, e.g. `torch.nn.functional.cross_entropy`.
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalResult:
    """Mean loss and accuracy (None when the outputs are not class scores)."""

    loss: float
    accuracy: float | None
    num_examples: int


def count_correct(outputs: Tensor, labels: Tensor) -> int | None:
    """How many predictions in a batch are right; None for non-class outputs."""
    if outputs.dim() == 2 and outputs.shape[1] >= 2:
        return int((outputs.argmax(dim=1) == labels).sum())
    if outputs.dim() == 1 or (outputs.dim() == 2 and outputs.shape[1] == 1):
        predicted = outputs.reshape(-1) > 0
        return int((predicted == (labels.reshape(-1) > 0.5)).sum())
    return None


def evaluate(
    model: nn.Module,
    data: ClientDataset,
    *,
    loss_fn: LossFn = nn.functional.cross_entropy,
    batch_size: int = 1024,
) -> EvalResult:
    """Mean loss and accuracy of `model` (in eval mode) over `data`."""
    if data.num_examples == 0:
        raise DataError(
            f"client {data.client_id} has no examples to evaluate on; pass a "
            "dataset with at least one row"
        )
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    loss_sum = 0.0
    correct: int | None = 0
    try:
        with torch.no_grad():
            for start in range(0, data.num_examples, batch_size):
                x = data.features[start : start + batch_size].to(device)
                y = data.labels[start : start + batch_size].to(device)
                out = model(x)
                loss_sum += float(loss_fn(out, y)) * len(y)
                batch_correct = count_correct(out, y)
                correct = (
                    None
                    if correct is None or batch_correct is None
                    else correct + batch_correct
                )
    finally:
        model.train(was_training)
    n = data.num_examples
    return EvalResult(
        loss=loss_sum / n,
        accuracy=None if correct is None else correct / n,
        num_examples=n,
    )


def evaluate_per_client(
    model: nn.Module,
    spec: ParamSpec,
    params: Tensor,
    clients: Iterable[ClientDataset],
    *,
    loss_fn: LossFn = nn.functional.cross_entropy,
) -> dict[int, EvalResult]:
    """Evaluate the flat `params` on each client's own data (clients with data).

    This is an analysis tool for simulations: in a deployment each client
    would run it locally and the numbers would be aggregated securely.
    """
    spec.load_into(model, params)
    return {
        c.client_id: evaluate(model, c, loss_fn=loss_fn)
        for c in clients
        if c.num_examples > 0
    }
