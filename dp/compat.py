"""Which models Opacus can make private, and with which per-sample method.

:func:`check_private_compatible` and :func:`make_private_compatible` decide
whether Opacus can compute per-example gradients for a model at all;
:func:`ghost_unsupported_reason` decides whether it can do so without
materialising them (fast gradient clipping, Opacus's ``"ghost"`` mode).
"""

from __future__ import annotations

import logging
import warnings
from typing import cast

import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.validators import ModuleValidator
from torch import nn

from dp.errors import UnsupportedModelError

__all__ = [
    "check_private_compatible",
    "ghost_unsupported_reason",
    "make_private_compatible",
]

_log = logging.getLogger(__name__)


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


def _tied_parameter(model: nn.Module) -> str | None:
    owners: dict[int, str] = {}
    for mod_name, module in model.named_modules():
        for p_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            label = f"{mod_name or '<root>'}.{p_name}"
            if id(param) in owners:
                return f"parameter {label} is tied to {owners[id(param)]}"
            owners[id(param)] = label
    return None


def _reused_module(model: nn.Module, example: torch.Tensor) -> str | None:
    """A ghost-clipped module the forward pass calls more than once, if any."""
    ghosted = GradSampleModuleFastGradientClipping.NORM_SAMPLERS
    calls: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if type(module) in ghosted and any(
            p.requires_grad for p in module.parameters(recurse=False)
        ):

            def count(*_: object, key: str = name or "<root>") -> None:
                calls[key] = calls.get(key, 0) + 1

            handles.append(module.register_forward_pre_hook(count))
    was_training = model.training
    # eval(): the probe must not draw dropout masks from torch's generator.
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(example.to(device))
    except Exception as exc:  # the model's own error: let training report it
        return f"a probe forward pass on one example failed ({exc})"
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    reused = sorted(k for k, n in calls.items() if n > 1)
    if reused:
        return f"module(s) {', '.join(reused)} called more than once per forward pass"
    return None


def ghost_unsupported_reason(
    model: nn.Module, example: torch.Tensor | None
) -> str | None:
    """Why fast gradient clipping cannot train ``model``, or ``None`` if it can.

    Opacus's fast gradient clipping computes each example's gradient norm
    layer by layer (exactly, from activations and output gradients, for
    Linear and Embedding; from that layer's per-sample gradients, freed at
    once, for the others) and then back-propagates the clipped loss.  It
    refuses a parameter reached through two modules (tied weights) and a
    Linear or Embedding module called twice in one forward pass; the latter
    is found by counting calls in one forward pass on ``example`` (a batch of
    one input; no gradient, nothing released).
    """
    reason = _tied_parameter(model)
    if reason is None and example is not None:
        reason = _reused_module(model, example)
    return reason
