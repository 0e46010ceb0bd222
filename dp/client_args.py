"""Argument checks for :class:`dp.client.PrivateClient`, each one named error.

Every check raises a :class:`~dp.errors.DPConfigError` (or
:class:`~dp.errors.InvalidDeltaError`) that names the argument, what was found
and what would be accepted; nothing is trained or written before they pass.
"""

from __future__ import annotations

import math
from typing import Any

from torch.utils.data import Dataset

from dp.calibration import calibrate_noise_multiplier
from dp.config import DPConfig, check_noise_multiplier
from dp.errors import DPConfigError, InvalidDeltaError

__all__ = [
    "check_dataset_size",
    "check_delta",
    "check_identity",
    "check_round_args",
    "resolve_sigma",
]


def check_identity(client_id: object, num_examples: object) -> None:
    """A non-empty string id and a positive int count."""
    if not isinstance(client_id, str) or not client_id:
        raise DPConfigError(
            f"client_id must be a non-empty string; found {client_id!r}"
        )
    if isinstance(num_examples, bool) or not isinstance(num_examples, int):
        raise DPConfigError(f"num_examples must be an int; found {num_examples!r}")
    if num_examples < 1:
        raise DPConfigError(f"num_examples must be >= 1; found {num_examples!r}")


def check_delta(config: DPConfig, num_examples: int) -> None:
    """δ below 1/n_local."""
    if not config.delta < 1.0 / num_examples:
        raise InvalidDeltaError(
            f"delta must be below 1/n_local = 1/{num_examples} = "
            f"{1.0 / num_examples:.3g} (e.g. <= {0.1 / num_examples:.3g}), or "
            f"a mechanism could publish a whole record; found {config.delta!r}"
        )


def resolve_sigma(
    config: DPConfig, num_examples: int, noise_multiplier: float | None
) -> float:
    """σ: ``noise_multiplier`` if given (and not contradicting the config), else
    the configured or calibrated one."""
    if noise_multiplier is None:
        return calibrate_noise_multiplier(config, num_examples)
    sigma = check_noise_multiplier(noise_multiplier)
    if config.noise_multiplier is not None and sigma != config.noise_multiplier:
        raise DPConfigError(
            f"noise_multiplier={sigma!r} contradicts "
            f"config.noise_multiplier={config.noise_multiplier!r}"
        )
    return sigma


def check_round_args(round_idx: object, lr: object, last_round: int) -> None:
    """A round index not before ``last_round`` and a finite positive lr."""
    if isinstance(round_idx, bool) or not isinstance(round_idx, int) or round_idx < 0:
        raise DPConfigError(f"round_idx must be an int >= 0; found {round_idx!r}")
    if round_idx < last_round:
        raise DPConfigError(
            f"round_idx must be >= the last charged round ({last_round}); "
            f"found {round_idx}"
        )
    if isinstance(lr, bool) or not isinstance(lr, int | float):
        raise DPConfigError(f"lr must be a real number; found {lr!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise DPConfigError(f"lr must be finite and > 0; found {lr!r}")


def check_dataset_size(dataset: Dataset[Any], num_examples: int) -> None:
    """Refuse a dataset of another size than the sample rate was fixed for."""
    if len(dataset) != num_examples:  # type: ignore[arg-type]
        raise DPConfigError(
            f"dataset must have num_examples={num_examples} items, the size the "
            f"sample rate was fixed for; found {len(dataset)}"  # type: ignore[arg-type]
        )
