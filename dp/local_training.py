"""One client's DP-SGD machinery, built once and reused every round.

:class:`LocalDPTrainer` wraps a private copy of the model with Opacus once
(``make_private`` on a :class:`~dp.engine.CSPRNGPrivacyEngine`: grad-sample
module, DP optimizer, accountant hook) and, each round, copies the global
weights into that copy, resets the optimizer state and runs the round's
DP-SGD steps.  Only a change of architecture or optimizer rebuilds it.

Per-example gradients are clipped by fast gradient clipping (Opacus's
``"ghost"`` mode) where the model allows it: a first backward pass of the
summed loss gives every example's gradient norm without materialising
per-example gradients, and a second pass of ``Σᵢ cᵢ·lossᵢ`` with
``cᵢ = min(1, C / (‖gᵢ‖ + 10⁻⁶))`` gives the sum of clipped gradients; the
gradients of the first pass are discarded.  Where the model ties weights
across modules, or calls a Linear/Embedding module twice in one forward pass,
it falls back to per-sample gradients by hooks and logs why.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dp.compat import check_private_compatible, ghost_unsupported_reason
from dp.config import GradSampleMode
from dp.engine import (
    CSPRNGDPOptimizer,
    CSPRNGDPOptimizerFastGradientClipping,
    CSPRNGPrivacyEngine,
    LocalOptimizer,
    LossFn,
)
from dp.errors import PrivacyError, UnsupportedModelError
from dp.noise import SecureRandom
from dp.noise_prefetch import PrefetchedNoise, reserve_prefetch
from dp.sampling import poisson_loader

__all__ = [
    "DRAW_AHEAD_MIN_PARAMS",
    "DPSGDSettings",
    "LocalDPTrainer",
    "LocalTrainingOutcome",
]

_log = logging.getLogger(__name__)

DPOpt = CSPRNGDPOptimizer | CSPRNGDPOptimizerFastGradientClipping

#: Steps of noise the in-round drawing thread may hold ahead of the optimizer.
_LOOKAHEAD_STEPS = 2
#: Smallest model (parameters) whose noise is drawn on a background thread.
#: Below it a step's noise takes under 2 ms to draw, too little to repay
#: handing it between threads and the GIL contention those threads add (the
#: hospital pilot's rounds ran about 15 % slower with them).
DRAW_AHEAD_MIN_PARAMS = 1 << 16


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalTrainingOutcome:
    """What one local DP-SGD run produced."""

    state_dict: dict[str, torch.Tensor]
    steps: int
    examples_seen: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DPSGDSettings:
    """What stays fixed across a client's rounds."""

    noise_multiplier: float
    max_grad_norm: float
    steps_per_epoch: int
    grad_sample_mode: GradSampleMode
    prefetch_noise: bool = False


@dataclass(frozen=True, slots=True)
class _Wrapped:
    """The private copy of the model and everything Opacus attached to it."""

    signature: tuple[object, ...]
    kind: LocalOptimizer
    mode: GradSampleMode
    local: nn.Module
    gsm: Any  # opacus AbstractGradSampleModule
    optimizer: DPOpt


def _signature(model: nn.Module) -> tuple[object, ...]:
    """Architecture, parameter shapes, dtypes and devices: what a wrap depends on."""
    modules = tuple((name, type(m)) for name, m in model.named_modules())
    tensors = tuple(
        (k, tuple(v.shape), v.dtype, v.device, getattr(v, "requires_grad", False))
        for k, v in model.state_dict(keep_vars=True).items()
    )
    return modules, tensors


def _make_optimizer(
    kind: LocalOptimizer, params: list[nn.Parameter]
) -> torch.optim.Optimizer:
    if kind is LocalOptimizer.SGD:
        return torch.optim.SGD(params, lr=1.0)
    return torch.optim.Adam(params, lr=1.0)


def _first_input(dataset: Dataset[Any]) -> torch.Tensor | None:
    first = dataset[0]
    x = first[0] if isinstance(first, tuple | list) else None
    return x.unsqueeze(0) if isinstance(x, torch.Tensor) else None


def _clipped_backward(gsm: Any, optimizer: DPOpt, losses: torch.Tensor) -> None:
    """Fast gradient clipping: leave Σᵢ clip(∇lossᵢ) in ``p.grad``."""
    # Hooks record per-example gradient norms.
    losses.sum().backward(retain_graph=True)  # type: ignore[no-untyped-call]
    coeff = gsm.get_clipping_coef().to(device=losses.device, dtype=losses.dtype)
    optimizer.zero_grad(set_to_none=True)  # the unclipped sum must not survive
    gsm.disable_hooks()
    try:
        (coeff * losses).sum().backward()  # type: ignore[no-untyped-call]
    finally:
        gsm.enable_hooks()


class LocalDPTrainer:
    """Reusable DP-SGD for one client: wraps once, trains every round."""

    def __init__(self, engine: CSPRNGPrivacyEngine, settings: DPSGDSettings) -> None:
        self._engine = engine
        self._settings = settings
        self._wrapped: _Wrapped | None = None
        self._prefetched: PrefetchedNoise | None = None
        self.builds = 0

    @property
    def prefetch_noise(self) -> bool:
        """Whether the next round's noise is drawn between rounds, where it can be."""
        return self._settings.prefetch_noise and (
            self._wrapped is not None and _noise_drawn_ahead(self._wrapped)
        )

    @property
    def grad_sample_mode(self) -> GradSampleMode | None:
        """The per-sample method in use (``None`` before the first round)."""
        return None if self._wrapped is None else self._wrapped.mode

    def _mode_for(self, model: nn.Module, dataset: Dataset[Any]) -> GradSampleMode:
        wanted = self._settings.grad_sample_mode
        if wanted is not GradSampleMode.GHOST:
            return wanted
        reason = ghost_unsupported_reason(model, _first_input(dataset))
        if reason is None:
            return wanted
        _log.warning("fast gradient clipping unavailable, using hooks: %s", reason)
        return GradSampleMode.HOOKS

    def _build(
        self, model: nn.Module, dataset: Dataset[Any], kind: LocalOptimizer
    ) -> _Wrapped:
        check_private_compatible(model)
        if self._wrapped is not None:
            self._wrapped.gsm.cleanup()
            self._wrapped = None
        local = copy.deepcopy(model).train()
        mode = self._mode_for(local, dataset)  # probes the copy, not the caller's
        params = [p for p in local.parameters() if p.requires_grad]
        loader = poisson_loader(
            dataset,
            sample_rate=1.0 / self._settings.steps_per_epoch,
            steps=self._settings.steps_per_epoch,
            rng=self._engine.rng,
        )
        made = self._engine.make_private(
            module=local,
            optimizer=_make_optimizer(kind, params),
            data_loader=loader,
            noise_multiplier=self._settings.noise_multiplier,
            max_grad_norm=self._settings.max_grad_norm,
            loss_reduction="sum",
            poisson_sampling=True,
            grad_sample_mode=mode.value,
        )
        self.builds += 1
        return _Wrapped(_signature(model), kind, mode, local, made[0], made[1])

    def _noise_plan(self, w: _Wrapped, epochs: int) -> tuple[float, list[Any], int]:
        params = list(w.optimizer.params)
        std = self._settings.noise_multiplier * self._settings.max_grad_norm
        return (
            std,
            [tuple(p.shape) for p in params],
            self._settings.steps_per_epoch * epochs,
        )

    def _claim_prefetched(self, w: _Wrapped, epochs: int) -> PrefetchedNoise | None:
        """The noise drawn ahead for this round, if it fits it exactly."""
        pre, self._prefetched = self._prefetched, None
        if pre is None:
            return None
        std, shapes, steps = self._noise_plan(w, epochs)
        if pre.fits(std=std, shapes=shapes, steps=steps):
            return pre
        pre.cancel()  # a mismatch discards it: noise is never reused
        return None

    def _in_round_noise(self, w: _Wrapped, epochs: int) -> PrefetchedNoise | None:
        """This round's noise, drawn on a background thread a few steps ahead."""
        if not _noise_drawn_ahead(w):
            return None
        std, shapes, steps = self._noise_plan(w, epochs)
        return PrefetchedNoise(
            self._engine.rng.spawn(),
            std=std,
            shapes=shapes,
            steps=steps,
            lookahead=_LOOKAHEAD_STEPS * len(shapes),
        )

    def start_prefetch(self, epochs: int, rng: SecureRandom) -> bool:
        """Draw the next round's noise from ``rng`` on a background thread.

        Only where :attr:`prefetch_noise` holds (a wrapped CPU float32 model
        of at least :data:`DRAW_AHEAD_MIN_PARAMS` parameters) and while the
        process-wide prefetch budget has room; says whether it did.
        ``rng`` must be the engine generator's :meth:`~SecureRandom.spawn`.
        """
        w = self._wrapped
        if not self.prefetch_noise or w is None:
            return False
        std, shapes, steps = self._noise_plan(w, epochs)
        nbytes = PrefetchedNoise.nbytes(shapes, steps)
        if not reserve_prefetch(nbytes):
            _log.info("next round's noise exceeds the prefetch budget; drawn in round")
            return False
        if self._prefetched is not None:
            self._prefetched.cancel()
        self._prefetched = PrefetchedNoise(
            rng,
            std=std,
            shapes=shapes,
            steps=steps,
            reserved=nbytes,
        )
        return True

    def wait_for_prefetched_noise(self) -> None:
        """Block until the noise drawn ahead for the next round (if any) is ready."""
        if self._prefetched is not None:
            self._prefetched.wait()

    def prepare(
        self, model: nn.Module, dataset: Dataset[Any], kind: LocalOptimizer
    ) -> None:
        """Wrap ``model`` unless the current wrap fits it; raises if Opacus cannot.

        Raises :class:`~dp.errors.UnsupportedModelError` before anything is
        trained; call it before charging the round.
        """
        w = self._wrapped
        if w is None or w.kind is not kind or w.signature != _signature(model):
            self._wrapped = self._build(model, dataset, kind)

    def run(
        self,
        model: nn.Module,
        dataset: Dataset[Any],
        *,
        epochs: int,
        lr: float,
        loss_fn: LossFn,
        kind: LocalOptimizer,
    ) -> LocalTrainingOutcome:
        """``epochs`` DP-SGD epochs from ``model``'s weights; ``model`` is untouched.

        Each step advances ``engine.accountant`` through Opacus's optimizer
        hook.  The trained weights come back as a detached ``state_dict`` with
        ``model``'s own keys.
        """
        self.prepare(model, dataset, kind)
        w = self._wrapped
        assert w is not None  # prepare() built it
        w.local.load_state_dict(model.state_dict())
        inner = w.optimizer.original_optimizer
        inner.state.clear()  # a fresh optimizer state every round
        for group in inner.param_groups:
            group["lr"] = lr
        loader = poisson_loader(
            dataset,
            sample_rate=1.0 / self._settings.steps_per_epoch,
            steps=self._settings.steps_per_epoch,
            rng=self._engine.rng,
        )
        noise = self._claim_prefetched(w, epochs) or self._in_round_noise(w, epochs)
        w.optimizer.noise.prefetched = noise
        try:
            with warnings.catch_warnings():
                # Opacus's hooks fire on outputs when inputs need no grad; harmless.
                warnings.filterwarnings(
                    "ignore", message="Full backward hook is firing"
                )
                steps, seen = _train_epochs(w, loader, epochs=epochs, loss_fn=loss_fn)
        except BaseException:
            # A step cut short leaves Opacus's per-module activations and
            # forward counters behind; the next round starts from a fresh wrap.
            w.gsm.cleanup()
            self._wrapped = None
            raise
        finally:
            w.optimizer.zero_grad(set_to_none=True)
            w.optimizer.noise.prefetched = None  # used up or discarded, never reused
            if noise is not None:
                noise.cancel()
        state = {k: v.detach().clone() for k, v in w.local.state_dict().items()}
        return LocalTrainingOutcome(
            state_dict=state,
            steps=steps,
            examples_seen=seen,
        )


def _noise_drawn_ahead(w: _Wrapped) -> bool:
    """Whether ``w``'s noise is drawn off the critical path: host float32
    parameters, at least :data:`DRAW_AHEAD_MIN_PARAMS` of them.

    Noise for parameters on an accelerator is drawn there, step by step.
    """
    noise = w.optimizer.noise
    params = list(w.optimizer.params)
    return sum(p.numel() for p in params) >= DRAW_AHEAD_MIN_PARAMS and all(
        not noise.on_device(p.device) and p.dtype == torch.float32 for p in params
    )


def _losses(
    gsm: Any, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn
) -> torch.Tensor:
    try:
        outputs = gsm(inputs)
    except NotImplementedError as exc:  # Opacus refusing weight reuse mid-round
        raise UnsupportedModelError(
            f"fast gradient clipping cannot train this model ({exc}); set "
            "DPConfig.grad_sample_mode=GradSampleMode.HOOKS"
        ) from exc
    losses = loss_fn(outputs, targets)
    if losses.dim() != 1 or losses.shape[0] != targets.shape[0]:
        raise PrivacyError(
            "loss_fn must return one loss per example (reduction='none'); "
            f"found shape {tuple(losses.shape)} for a batch of {targets.shape[0]}"
        )
    return losses


def _train_epochs(
    w: _Wrapped, loader: DataLoader[Any], *, epochs: int, loss_fn: LossFn
) -> tuple[int, int]:
    device = next(p.device for p in w.local.parameters())
    ghost = w.mode is GradSampleMode.GHOST
    steps = seen = 0
    for _ in range(epochs):
        for inputs, targets in loader:
            w.optimizer.zero_grad(set_to_none=True)
            batch = int(targets.shape[0])
            if batch == 0:
                # The clipped sum of no examples is exactly zero: the step
                # adds noise only (and no layer sees a zero-length batch).
                w.optimizer.prepare_empty_step()
            else:
                inputs, targets = inputs.to(device), targets.to(device)
                losses = _losses(w.gsm, inputs, targets, loss_fn)
                if ghost:
                    _clipped_backward(w.gsm, w.optimizer, losses)
                else:
                    # Summed, not averaged: per-sample gradients must be the
                    # gradients of single examples for clipping to bound each.
                    losses.sum().backward()  # type: ignore[no-untyped-call]
            w.optimizer.step()
            steps += 1
            seen += batch
    return steps, seen
