"""CSPRNG noise: distribution (two-sided tests), sampling rate, and wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from dp import ChaCha20Random
from dp.engine import CSPRNGDPOptimizer, PoissonBatchSampler
from tests.dp.helpers import fixed_rng

SIGMA = 1.7
N = 200_000
ALPHA = 1e-3


def _variance_p_value(x: np.ndarray, sigma: float) -> float:
    """Two-sided χ² test of H0: Var = σ² (mean known to be 0)."""
    stat = float(np.sum(x * x)) / sigma**2
    cdf = stats.chi2.cdf(stat, df=x.size)
    return float(2 * min(cdf, 1 - cdf))


def _ks_p_value(x: np.ndarray, sigma: float) -> float:
    return float(stats.kstest(x / sigma, "norm").pvalue)


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return fixed_rng(7).gaussian_noise(SIGMA, (N,))


def test_accepts_the_right_sigma(noise: np.ndarray) -> None:
    assert _variance_p_value(noise, SIGMA) > ALPHA
    assert _ks_p_value(noise, SIGMA) > ALPHA
    assert abs(float(noise.mean())) < 4 * SIGMA / math.sqrt(N)


@pytest.mark.parametrize("factor", [2 / 3, 3 / 2])
def test_rejects_a_wrong_sigma(noise: np.ndarray, factor: float) -> None:
    assert _variance_p_value(noise, factor * SIGMA) < ALPHA
    assert _ks_p_value(noise, factor * SIGMA) < ALPHA


def test_standard_normal_tails_are_gaussian() -> None:
    z = fixed_rng(8).standard_normal(N)
    # P(|Z| > 3) = 0.0027: a Box–Muller bug usually shows in the tails.
    assert stats.binomtest(int(np.sum(np.abs(z) > 3)), N, 0.0026998).pvalue > ALPHA


def test_uniforms_are_in_open_interval_with_53_bits() -> None:
    u = fixed_rng(9).uniform(100_000)
    assert u.min() > 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > ALPHA
    # Values lie on the grid (k + 1/2)·2⁻⁵³.
    assert np.all((u * 2.0**53 - 0.5) % 1 == 0)


def test_fixed_key_is_reproducible_and_fresh_keys_differ() -> None:
    assert np.array_equal(
        fixed_rng(3).gaussian_noise(1.0, (64,)), fixed_rng(3).gaussian_noise(1.0, (64,))
    )
    assert not np.array_equal(ChaCha20Random().uniform(8), ChaCha20Random().uniform(8))


def test_fixed_key_warns() -> None:
    with pytest.warns(RuntimeWarning, match="test use only"):
        ChaCha20Random.insecure_from_key_for_testing(bytes(32))
    with pytest.raises(ValueError, match="key must be 32 bytes; found 31"):
        ChaCha20Random.insecure_from_key_for_testing(bytes(31))


def test_poisson_sampler_rate_and_length() -> None:
    sampler = PoissonBatchSampler(
        num_samples=1000, sample_rate=0.05, steps=200, rng=fixed_rng(4)
    )
    batches = list(sampler)
    assert len(batches) == len(sampler) == 200
    total = sum(len(b) for b in batches)
    assert stats.binomtest(total, 200 * 1000, 0.05).pvalue > ALPHA
    assert all(len(set(b)) == len(b) and all(0 <= i < 1000 for i in b) for b in batches)


def test_optimizer_noise_is_the_csprng_stream() -> None:
    """DPOptimizer.add_noise draws exactly the CSPRNG's 4-sum Gaussian, σ·C."""
    p = torch.nn.Parameter(torch.zeros(5000))
    opt = CSPRNGDPOptimizer(
        torch.optim.SGD([p], lr=1.0),
        noise_multiplier=1.5,
        max_grad_norm=2.0,
        normaliser=10.0,
        rng=fixed_rng(5),
    )
    p.summed_grad = torch.zeros(5000)  # type: ignore[attr-defined]
    p.grad_sample = torch.zeros(1, 5000)  # type: ignore[attr-defined]  # one (empty-signal) example
    before = torch.get_rng_state()
    opt.add_noise()
    opt.scale_grad()
    expected = fixed_rng(5).gaussian_noise(3.0, (5000,)) / 10.0
    assert p.grad is not None
    np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert _variance_p_value(p.grad.double().numpy(), 0.3) > ALPHA
    assert torch.equal(before, torch.get_rng_state())
