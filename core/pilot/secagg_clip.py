"""The secure-aggregation clip a pilot derives from its DP settings.

Secure aggregation clips every update coordinate to ``[-clip, clip]`` before
quantising it; a clip below what updates actually reach silently distorts
the secure mean. Under DP-SGD an institution's round update is bounded by
what its settings allow, so when the config leaves ``clip`` unset the pilot
uses that bound, the largest over institutions. Per coordinate, one round of
``steps`` plain-SGD steps moves a weight by at most::

    lr · (steps · C · (1 + z/√B)  +  z · √steps · σ · C / B)

— each step adds the sum of clipped per-example gradients over a Poisson
batch of expected size B (at most C per example; the batch size exceeds B by
more than z·√B with negligible probability), plus Gaussian noise of standard
deviation σ·C, all divided by the public B. With z = 4 a coordinate lies
beyond the noise term with probability about 6e-5. An Adam step moves a
coordinate by at most lr·(1 − β₁)/√(1 − β₂) (Kingma & Ba 2015), about
3.2·lr with torch's defaults. The bound costs little precision: the
quantisation step, clip / 2^(value_bits − 1), stays far below the DP noise.

>>> import dp
>>> cfg = dp.DPConfig(noise_multiplier=1.0, delta=1e-5, max_grad_norm=1.0,
...                   epsilon_budget=8.0, planned_rounds=1, batch_size=16)
>>> round(sgd_bound(cfg, lr=0.5, num_examples=64, noise_multiplier=1.0), 3)
4.25
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import dp
from core.config import LocalTrainingConfig, OptimizerKind

__all__ = ["ADAM_STEP_BOUND", "CLIP_Z", "derived_clip", "sgd_bound"]

#: Standard deviations of the noise (and of the Poisson batch size) allowed for.
CLIP_Z = 4.0
#: Largest per-coordinate Adam step over lr, (1 − 0.9)/√(1 − 0.999).
ADAM_STEP_BOUND = 0.1 / math.sqrt(0.001)


def sgd_bound(
    privacy: dp.DPConfig, *, lr: float, num_examples: int, noise_multiplier: float
) -> float:
    """Per-coordinate bound of one institution's round update under DP-SGD."""
    steps = dp.steps_per_round(privacy, num_examples)
    b, c = privacy.batch_size, privacy.max_grad_norm
    signal = steps * c * (1 + CLIP_Z / math.sqrt(b))
    noise = CLIP_Z * math.sqrt(steps) * noise_multiplier * c / b
    return lr * (signal + noise)


def derived_clip(
    privacy: dp.DPConfig, training: LocalTrainingConfig, sizes: Sequence[int]
) -> float:
    """The largest per-coordinate update bound over institutions of `sizes`."""
    lr = training.learning_rate
    if training.optimizer is OptimizerKind.ADAM:
        steps = max(dp.steps_per_round(privacy, n) for n in sizes)
        return lr * steps * ADAM_STEP_BOUND
    return max(
        sgd_bound(
            privacy,
            lr=lr,
            num_examples=n,
            # σ as each institution will calibrate it (cached for the client).
            noise_multiplier=dp.calibrate_noise_multiplier(privacy, n),
        )
        for n in sizes
    )
