"""The Opacus call site: model fixing, CSPRNG noise and sampling, one DP-SGD run.

Opacus 1.6.0 gives us per-sample gradients, clipping and accountants; its only
secure RNG path needs ``torchcsprng`` (unavailable, notes §2.7).  We keep
``PrivacyEngine.make_private`` as the one place that wires model, optimizer,
loader and accountant hook together, and replace exactly the two pieces that
draw randomness, through the engine's own factory methods:

* ``_prepare_optimizer`` builds a :class:`CSPRNGDPOptimizer`, a ``DPOptimizer``
  whose ``add_noise`` draws from :class:`~dp.noise.ChaCha20Random`;
* ``_prepare_data_loader`` accepts only a loader whose batch sampler is a
  :class:`PoissonBatchSampler` driven by the same CSPRNG.

So the Gaussian noise and the Poisson inclusion bits are CSPRNG-backed; the
``DataLoader`` is given a private ``torch.Generator`` only so that it does not
consume the global torch RNG for its unused worker seed.  Model-internal
randomness (dropout, say) stays with torch: it is not part of the mechanism.

The summed noisy gradient is divided by the configured (public) batch size, not
by Opacus's ``int(n·q)``, which depends on the private dataset size
(opacus#571, #819).  n itself is treated as public, as the sample rate
q = 1/ceil(n/B) is.
"""

from __future__ import annotations

import copy
import enum
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
from opacus import PrivacyEngine
from opacus.data_loader import shape_safe, wrap_collate_with_empty
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from dp.config import Accountant, GradSampleMode
from dp.errors import PrivacyError, UnsupportedModelError
from dp.noise import ChaCha20Random

__all__ = [
    "CSPRNGDPOptimizer",
    "CSPRNGPrivacyEngine",
    "LocalOptimizer",
    "LocalTrainingOutcome",
    "LossFn",
    "PoissonBatchSampler",
    "check_private_compatible",
    "make_private_compatible",
    "run_dp_sgd",
]

_log = logging.getLogger(__name__)

#: Per-example loss: ``loss_fn(outputs, targets)`` returns one loss per example
#: (e.g. ``nn.CrossEntropyLoss(reduction="none")``).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LocalOptimizer(enum.Enum):
    """The optimizer DP-SGD's noisy gradient is fed to."""

    SGD = "sgd"
    ADAM = "adam"


def _describe_errors(model: nn.Module) -> list[str]:
    return [str(e) for e in ModuleValidator.validate(model, strict=False)]


def check_private_compatible(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` unless Opacus can make ``model`` private."""
    if not any(p.requires_grad for p in model.parameters()):
        raise UnsupportedModelError("model has no trainable parameters to privatise")
    was_training = model.training
    model.train()
    try:
        errors = _describe_errors(model)
    finally:
        model.train(was_training)
    if errors:
        raise UnsupportedModelError(
            "model has layers Opacus cannot make private: "
            + "; ".join(errors)
            + ". Accepted: layers with per-sample gradient support (Linear, "
            "Conv1d/2d/3d, Embedding, EmbeddingBag, GroupNorm, LayerNorm, "
            "InstanceNorm, RMSNorm, DPLSTM/DPGRU/DPMultiheadAttention) and "
            "parameter-free layers; call make_private_compatible() first to "
            "replace BatchNorm, LSTM, GRU and MultiheadAttention"
        )


def make_private_compatible(model: nn.Module) -> tuple[nn.Module, tuple[str, ...]]:
    """A DP-compatible copy of ``model`` and the list of what was changed.

    Applies Opacus's ``ModuleValidator.fix`` (a deep copy: ``model`` itself is
    untouched; BatchNorm → GroupNorm, LSTM → DPLSTM, …), logs each change, and
    validates the result.  Call it once, on the initial global model, so every
    client trains the same architecture.  Raises :class:`UnsupportedModelError`
    when layers remain that Opacus cannot handle.
    """
    before = {name: type(m) for name, m in model.named_modules()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fixed = cast(nn.Module, ModuleValidator.fix(model))
    fixed.train()
    changes: list[str] = []
    for name, module in fixed.named_modules():
        old = before.get(name)
        if old is not None and old is not type(module):
            label = name or "<root>"
            change = f"{label}: {old.__name__} -> {module!r}"
            if isinstance(module, nn.GroupNorm) and module.num_groups == (
                module.num_channels
            ):
                # opacus#567: one channel per group normalises each feature of a
                # (N, C) input to zero.
                change += " (one channel per group: check it suits the input)"
            changes.append(change)
            _log.info("make_private_compatible: %s", change)
    check_private_compatible(fixed)
    return fixed, tuple(changes)


class CSPRNGDPOptimizer(DPOptimizer):  # type: ignore[misc]
    """``DPOptimizer`` whose Gaussian noise comes from a ChaCha20 CSPRNG.

    Clipping and accumulation are Opacus's.  ``add_noise`` adds
    N(0, (σ·C)²) per coordinate from :meth:`ChaCha20Random.gaussian_noise`;
    ``scale_grad`` divides by the public ``normaliser`` (the configured batch
    size), whatever ``loss_reduction`` the module uses.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        normaliser: float,
        rng: ChaCha20Random,
    ) -> None:
        super().__init__(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=normaliser,
            loss_reduction="sum",
            generator=None,
            secure_mode=False,
        )
        self._rng = rng
        self._normaliser = float(normaliser)

    def add_noise(self) -> None:
        std = float(self.noise_multiplier * self.max_grad_norm)
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            summed = p.summed_grad
            noise = torch.from_numpy(self._rng.gaussian_noise(std, tuple(summed.shape)))
            p.grad = (
                summed + noise.to(device=summed.device, dtype=summed.dtype)
            ).view_as(p)
            _mark_as_processed(p.summed_grad)

    def scale_grad(self) -> None:
        for p in self.params:
            p.grad /= self._normaliser * self.accumulated_iterations


class PoissonBatchSampler(Sampler[list[int]]):
    """``steps`` Poisson batches: each index is in each batch with probability q."""

    def __init__(
        self, *, num_samples: int, sample_rate: float, steps: int, rng: ChaCha20Random
    ) -> None:
        self.num_samples = num_samples
        self.sample_rate = sample_rate
        self.steps = steps
        self._rng = rng

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            mask = self._rng.bernoulli(self.num_samples, self.sample_rate)
            yield [int(i) for i in mask.nonzero()[0]]


def poisson_loader(
    dataset: Dataset[Any], *, sample_rate: float, steps: int, rng: ChaCha20Random
) -> DataLoader[Any]:
    """A loader of ``steps`` CSPRNG Poisson batches that tolerates empty ones."""
    num_samples = len(dataset)  # type: ignore[arg-type]
    first = dataset[0]
    return DataLoader(
        dataset,
        batch_sampler=PoissonBatchSampler(
            num_samples=num_samples, sample_rate=sample_rate, steps=steps, rng=rng
        ),
        collate_fn=wrap_collate_with_empty(
            collate_fn=default_collate,
            sample_empty_shapes=[(0, *shape_safe(x)) for x in first],
            dtypes=[getattr(x, "dtype", torch.float32) for x in first],
        ),
        # Unused with num_workers=0, but DataLoader draws a worker seed from it;
        # a private generator keeps the global torch RNG untouched.
        generator=torch.Generator(),
    )


class CSPRNGPrivacyEngine(PrivacyEngine):  # type: ignore[misc]
    """A ``PrivacyEngine`` whose noise and sampling come from one ChaCha20 CSPRNG.

    One instance lives with a client for the whole federation; its accountant
    is reloaded from the ledger before each round (see ``PrivateClient``).
    """

    def __init__(
        self, *, accountant: Accountant, rng: ChaCha20Random, normaliser: float
    ) -> None:
        with warnings.catch_warnings():
            # Opacus warns that its own secure RNG is off; ours replaces it.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            super().__init__(accountant=accountant.value, secure_mode=False)
        self.rng = rng
        self.normaliser = normaliser

    def _prepare_optimizer(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        loss_reduction: str = "mean",
        distributed: bool = False,
        clipping: str = "flat",
        noise_generator: object = None,
        grad_sample_mode: str = "hooks",
        **kwargs: object,
    ) -> CSPRNGDPOptimizer:
        if distributed or clipping != "flat" or noise_generator is not None or kwargs:
            raise PrivacyError(
                "CSPRNGPrivacyEngine supports only flat clipping, no distributed "
                "training and no external noise generator"
            )
        if isinstance(optimizer, DPOptimizer):
            optimizer = optimizer.original_optimizer
        return CSPRNGDPOptimizer(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            normaliser=self.normaliser,
            rng=self.rng,
        )

    def _prepare_data_loader(
        self,
        data_loader: DataLoader[Any],
        *,
        poisson_sampling: bool,
        distributed: bool,
        batch_first: bool = True,
        rand_on_empty: bool = False,
    ) -> DataLoader[Any]:
        if (
            not poisson_sampling
            or distributed
            or rand_on_empty
            or not isinstance(data_loader.batch_sampler, PoissonBatchSampler)
        ):
            raise PrivacyError(
                "CSPRNGPrivacyEngine needs a poisson_loader() (CSPRNG Poisson "
                "sampling, empty batches kept empty)"
            )
        return data_loader


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalTrainingOutcome:
    """What one local DP-SGD run produced."""

    state_dict: dict[str, torch.Tensor]
    steps: int
    examples_seen: int
    train_loss: float


def _make_optimizer(
    kind: LocalOptimizer, params: list[nn.Parameter], lr: float
) -> torch.optim.Optimizer:
    if kind is LocalOptimizer.SGD:
        return torch.optim.SGD(params, lr=lr)
    return torch.optim.Adam(params, lr=lr)


def _train_epochs(
    gsm: nn.Module,
    dp_opt: DPOptimizer,
    loader: DataLoader[Any],
    *,
    epochs: int,
    loss_fn: LossFn,
) -> tuple[int, int, float]:
    steps = 0
    seen = 0
    loss_total = 0.0
    for _ in range(epochs):
        for inputs, targets in loader:
            dp_opt.zero_grad(set_to_none=True)
            losses = loss_fn(gsm(inputs), targets)
            if losses.dim() != 1 or losses.shape[0] != targets.shape[0]:
                raise PrivacyError(
                    "loss_fn must return one loss per example (reduction='none'); "
                    f"found shape {tuple(losses.shape)} for a batch of "
                    f"{targets.shape[0]}"
                )
            # Summed, not averaged: per-sample gradients must be the gradients
            # of single examples for clipping to bound each one's influence.
            losses.sum().backward()  # type: ignore[no-untyped-call]
            dp_opt.step()
            steps += 1
            seen += int(targets.shape[0])
            loss_total += float(losses.detach().sum())
    return steps, seen, loss_total


def run_dp_sgd(
    *,
    engine: CSPRNGPrivacyEngine,
    model: nn.Module,
    dataset: Dataset[Any],
    noise_multiplier: float,
    max_grad_norm: float,
    sample_rate: float,
    steps_per_epoch: int,
    epochs: int,
    lr: float,
    loss_fn: LossFn,
    optimizer: LocalOptimizer,
    grad_sample_mode: GradSampleMode,
) -> LocalTrainingOutcome:
    """Run ``epochs × steps_per_epoch`` DP-SGD steps on a copy of ``model``.

    ``model`` is not modified; the trained weights come back as a detached
    ``state_dict`` with ``model``'s own keys.  Each step advances
    ``engine.accountant`` through Opacus's optimizer hook.
    """
    if not (math.isfinite(lr) and lr > 0):
        raise PrivacyError(f"lr must be finite and > 0; found {lr!r}")
    check_private_compatible(model)
    local = copy.deepcopy(model).train()
    params = [p for p in local.parameters() if p.requires_grad]
    loader = poisson_loader(
        dataset, sample_rate=sample_rate, steps=steps_per_epoch, rng=engine.rng
    )
    gsm, dp_opt, dp_loader = engine.make_private(
        module=local,
        optimizer=_make_optimizer(optimizer, params, lr),
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        loss_reduction="sum",
        poisson_sampling=True,
        grad_sample_mode=grad_sample_mode.value,
    )
    try:
        with warnings.catch_warnings():
            # Opacus's hooks fire on outputs when inputs need no grad; harmless.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            steps, seen, loss_total = _train_epochs(
                gsm, dp_opt, dp_loader, epochs=epochs, loss_fn=loss_fn
            )
    finally:
        dp_opt.zero_grad(set_to_none=True)
        gsm.cleanup()
    state = {k: v.detach().clone() for k, v in local.state_dict().items()}
    return LocalTrainingOutcome(
        state_dict=state,
        steps=steps,
        examples_seen=seen,
        train_loss=loss_total / seen if seen else float("nan"),
    )
