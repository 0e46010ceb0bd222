"""The DP-released training metric: mean clipped per-example loss plus noise.

Mechanism (``Mechanism.GAUSSIAN_BOUNDED_SUM``): evaluate the per-example loss
of the round's trained model on every local example, map each to [0, B]
(NaN and +∞ count as B, −∞ as 0, so every input has a bounded contribution),
sum, add N(0, (σ·B)²) from the CSPRNG and divide by n.  Replacing one example
moves the sum by at most B, so the release is the Gaussian mechanism with
noise multiplier σ relative to that sensitivity; n is public under
replace-one accounting, so dividing by it is post-processing.

:func:`release_mean_loss` is the only way the value leaves: it runs the
``charge`` callback (the durable ledger append) *before* it draws the noise
and returns, so an exception or a crash between the two leaves the charge on
record and releases nothing.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from dp.config import check_noise_multiplier
from dp.errors import DPConfigError, PrivacyError
from dp.noise import ChaCha20Random

__all__ = ["clipped_loss_sum", "noised_mean", "release_mean_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: Examples evaluated per forward pass.
_CHUNK = 1024


def _check_bound(bound: float) -> None:
    if isinstance(bound, bool) or not isinstance(bound, (int, float)):
        raise DPConfigError(f"loss_bound must be a real number; found {bound!r}")
    if not (math.isfinite(bound) and bound > 0):
        raise DPConfigError(f"loss_bound must be finite and > 0; found {bound!r}")


def clipped_loss_sum(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    dataset: Dataset[Any],
    loss_fn: LossFn,
    bound: float,
) -> float:
    """Σᵢ clip(loss_i, 0, B) of ``model`` with ``state_dict`` over ``dataset``.

    ``model`` is not modified (a copy is evaluated, in eval mode, without
    gradients).  Raises :class:`PrivacyError` if ``loss_fn`` does not return
    one loss per example.
    """
    _check_bound(bound)
    local = copy.deepcopy(model)
    local.load_state_dict(state_dict)
    local.eval()
    n = len(dataset)  # type: ignore[arg-type]
    total = 0.0
    with torch.no_grad():
        for start in range(0, n, _CHUNK):
            items = [dataset[i] for i in range(start, min(n, start + _CHUNK))]
            inputs = torch.stack([torch.as_tensor(x) for x, _ in items])
            targets = torch.stack([torch.as_tensor(y) for _, y in items])
            losses = loss_fn(local(inputs), targets)
            if losses.dim() != 1 or losses.shape[0] != targets.shape[0]:
                raise PrivacyError(
                    "loss_fn must return one loss per example (reduction='none'); "
                    f"found shape {tuple(losses.shape)} for {targets.shape[0]} examples"
                )
            bounded = torch.nan_to_num(
                losses.double(), nan=bound, posinf=bound, neginf=0.0
            ).clamp(0.0, bound)
            total += float(bounded.sum())
    return total


def noised_mean(
    total: float,
    num_examples: int,
    *,
    bound: float,
    noise_multiplier: float,
    rng: ChaCha20Random,
) -> float:
    """``(total + N(0, (σ·B)²)) / n``, the noise drawn from ``rng``."""
    sigma = _check_release(total, num_examples, bound, noise_multiplier)
    noise = float(rng.gaussian_noise(sigma * bound, (1,))[0])
    return (total + noise) / num_examples


def _check_release(
    total: float, num_examples: int, bound: float, noise_multiplier: float
) -> float:
    _check_bound(bound)
    sigma = check_noise_multiplier(noise_multiplier)
    if isinstance(num_examples, bool) or not isinstance(num_examples, int):
        raise DPConfigError(f"num_examples must be an int; found {num_examples!r}")
    if num_examples < 1:
        raise DPConfigError(f"num_examples must be >= 1; found {num_examples!r}")
    if not (math.isfinite(total) and 0 <= total <= num_examples * bound):
        raise PrivacyError(
            f"total must be a sum of {num_examples} values in [0, {bound}]; "
            f"found {total!r}"
        )
    return sigma


def release_mean_loss(
    *,
    total: float,
    num_examples: int,
    bound: float,
    noise_multiplier: float,
    rng: ChaCha20Random,
    charge: Callable[[], object],
) -> float:
    """Charge first (``charge()`` must make the ledger entry durable), then release.

    Every argument is checked before ``charge()`` runs, so a refused release
    charges nothing.
    """
    _check_release(total, num_examples, bound, noise_multiplier)
    charge()
    return noised_mean(
        total, num_examples, bound=bound, noise_multiplier=noise_multiplier, rng=rng
    )
