"""The Opacus call site: a ``PrivacyEngine`` whose randomness is a CSPRNG.

Opacus 1.6.0 gives us per-sample gradients (or per-sample gradient norms),
clipping and accountants; its only secure RNG path needs ``torchcsprng``
(unavailable).  We keep ``PrivacyEngine.make_private`` as the one place that
wires model, optimizer, loader and accountant hook together, and replace
exactly the two pieces that draw randomness, through the engine's own factory
methods:

* ``_prepare_optimizer`` builds a :class:`CSPRNGDPOptimizer` (per-sample
  gradients by hooks or functorch) or a
  :class:`CSPRNGDPOptimizerFastGradientClipping` (Opacus's ``"ghost"`` mode:
  the clipped sum comes from a second backward pass), both adding noise from
  :class:`~dp.noise.SecureRandom` on the host, or from
  :class:`~dp.device_noise.DeviceGaussian` on the parameter's device;
* ``_prepare_data_loader`` accepts only a loader whose batch sampler is a
  :class:`~dp.sampling.PoissonBatchSampler` driven by the same CSPRNG.

So the Gaussian noise and the Poisson inclusion bits are CSPRNG-backed.
Model-internal randomness (dropout, say) stays with torch: it is not part of
the mechanism.

The summed noisy gradient is divided by the configured (public) batch size, not
by Opacus's ``int(n·q)``, which depends on the private dataset size
(opacus#571, #819).  n itself is treated as public, as the sample rate
q = 1/ceil(n/B) is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from opacus import PrivacyEngine
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch.utils.data import DataLoader

from dp.compat import check_private_compatible, make_private_compatible

# Re-exported: callers name the optimizer here, next to the engine using it.
from dp.config import Accountant, LocalOptimizer
from dp.device_noise import DeviceGaussian
from dp.errors import PrivacyError
from dp.noise import SecureRandom
from dp.noise_prefetch import PrefetchedNoise
from dp.sampling import PoissonBatchSampler, poisson_loader

__all__ = [
    "CSPRNGDPOptimizer",
    "CSPRNGDPOptimizerFastGradientClipping",
    "CSPRNGPrivacyEngine",
    "LocalOptimizer",
    "LossFn",
    "PoissonBatchSampler",
    "check_private_compatible",
    "make_private_compatible",
    "poisson_loader",
]

#: Per-example loss: ``loss_fn(outputs, targets)`` returns one loss per example
#: (e.g. ``nn.CrossEntropyLoss(reduction="none")``).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _Noise:
    """N(0, std²) noise shaped like a tensor, on its device."""

    def __init__(self, rng: SecureRandom) -> None:
        self.rng = rng
        self._device: DeviceGaussian | None = None
        #: This round's noise drawn ahead (float32 CPU parameters only), if any.
        self.prefetched: PrefetchedNoise | None = None

    def on_device(self, device: torch.device) -> bool:
        """Whether noise for ``device`` is drawn there rather than on the host."""
        return device.type != "cpu"

    def like(self, ref: torch.Tensor, std: float) -> torch.Tensor:
        if self.on_device(ref.device):
            if self._device is None:
                self._device = DeviceGaussian(self.rng)
            return self._device.gaussian_noise(
                std, tuple(ref.shape), device=ref.device, dtype=ref.dtype
            )
        if self.prefetched is not None:
            return torch.from_numpy(self.prefetched.take(tuple(ref.shape), std))
        if ref.dtype in (torch.float32, torch.float64):
            noise = torch.empty(ref.shape, dtype=ref.dtype)
            self.rng.gaussian_noise_into(std, noise.numpy())
            return noise
        return torch.from_numpy(self.rng.gaussian_noise(std, tuple(ref.shape))).to(
            ref.dtype
        )


def _add_noise(opt: DPOptimizer, noise: _Noise) -> None:
    """``p.grad = p.summed_grad + N(0, (σ·C)²)`` for every parameter."""
    std = float(opt.noise_multiplier * opt.max_grad_norm)
    for p in opt.params:
        _check_processed_flag(p.summed_grad)
        summed = p.summed_grad
        # noise + summed equals summed + noise exactly; adding in place saves
        # a d-sized allocation per step.
        p.grad = noise.like(summed, std).add_(summed).view_as(p)
        _mark_as_processed(p.summed_grad)


class _CSPRNGNoise:
    """What both CSPRNG optimizers share: Opacus's optimizer built with a sum
    loss and no torch generator, N(0, (σ·C)²) from the CSPRNG, and division
    by the public ``normaliser`` (the configured batch size)."""

    params: Any
    accumulated_iterations: Any

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        normaliser: float,
        rng: SecureRandom,
    ) -> None:
        # The next class in the MRO is the Opacus optimizer the subclass names.
        super().__init__(  # type: ignore[call-arg]
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=normaliser,
            loss_reduction="sum",
            generator=None,
            secure_mode=False,
        )
        self.noise = _Noise(rng)
        self._normaliser = float(normaliser)

    def add_noise(self) -> None:
        _add_noise(self, self.noise)

    def scale_grad(self) -> None:
        for p in self.params:
            p.grad /= self._normaliser * self.accumulated_iterations


class CSPRNGDPOptimizer(_CSPRNGNoise, DPOptimizer):  # type: ignore[misc]
    """``DPOptimizer`` whose Gaussian noise comes from a CSPRNG.

    Clipping and accumulation of per-sample gradients are Opacus's.
    ``add_noise`` adds N(0, (σ·C)²) per coordinate (see :class:`_Noise`);
    ``scale_grad`` divides by the public ``normaliser`` (the configured batch
    size), whatever ``loss_reduction`` the module uses.
    """

    def prepare_empty_step(self) -> None:
        """Stand in for the backward pass of an empty batch: no per-sample gradients."""
        for p in self.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)


class CSPRNGDPOptimizerFastGradientClipping(
    _CSPRNGNoise,
    DPOptimizerFastGradientClipping,  # type: ignore[misc]
):
    """Fast gradient clipping's optimizer with CSPRNG noise and the public normaliser.

    ``p.grad`` already holds the sum of clipped per-example gradients (the
    second backward pass of the clipped loss); this adds N(0, (σ·C)²) and
    divides by the public ``normaliser``, exactly as :class:`CSPRNGDPOptimizer`.
    """

    def accumulate(self) -> None:
        for p in self.params:
            if p.summed_grad is not None:
                p.summed_grad.add_(p.grad.data)
            else:
                # Opacus deep-copies here; add_noise replaces p.grad with a new
                # tensor, so the clipped sum can be taken over without a copy.
                p.summed_grad = p.grad.detach()

    def prepare_empty_step(self) -> None:
        """Stand in for the backward passes of an empty batch: a zero clipped sum."""
        for p in self.params:
            p.grad = torch.zeros_like(p)


class CSPRNGPrivacyEngine(PrivacyEngine):  # type: ignore[misc]
    """A ``PrivacyEngine`` whose noise and sampling come from one CSPRNG.

    One instance lives with a client for the whole federation; its accountant
    is reloaded from the ledger before each round (see ``PrivateClient``).
    """

    def __init__(
        self, *, accountant: Accountant, rng: SecureRandom, normaliser: float
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
    ) -> CSPRNGDPOptimizer | CSPRNGDPOptimizerFastGradientClipping:
        if distributed or clipping != "flat" or noise_generator is not None or kwargs:
            raise PrivacyError(
                "CSPRNGPrivacyEngine supports only flat clipping, no distributed "
                "training and no external noise generator"
            )
        if isinstance(optimizer, DPOptimizer):
            optimizer = optimizer.original_optimizer
        cls = (
            CSPRNGDPOptimizerFastGradientClipping
            if grad_sample_mode == "ghost"
            else CSPRNGDPOptimizer
        )
        return cls(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            normaliser=self.normaliser,
            rng=self.rng,
        )

    def _prepare_criterion(self, **kwargs: object) -> None:
        # The training loop runs fast gradient clipping's two backward passes
        # itself, for any per-example loss function; no criterion wrapper.
        return None

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
