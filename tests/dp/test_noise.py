"""Secure noise: statistical tests of ChaCha20Random, and DP-SGD draws only from it.

Every test below that *accepts* a distribution runs at a false-rejection rate
of α = 1e-4 (two-sided, α/2 per tail), mostly on fresh OS-keyed generators,
so the whole file fails spuriously with probability below about 2e-3; the
rejections of a wrong σ (2/3·σ, 3/2·σ) sit hundreds of standard deviations out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import TensorDataset

import dp
import dp.local_training
from dp.engine import CSPRNGDPOptimizer, PoissonBatchSampler
from dp.noise import ChaCha20Random, SecureRandom
from tests.dp import kit

ALPHA = 1e-4
N = 200_000
SIGMA = 2.0


def _variance_test_accepts(x: np.ndarray, sigma: float) -> bool:
    """Two-sided χ² test of Var = σ² with known mean 0: Σx²/σ² ~ χ²(n)."""
    stat = float(np.sum(x * x)) / sigma**2
    low = stats.chi2.ppf(ALPHA / 2, x.size)
    high = stats.chi2.isf(ALPHA / 2, x.size)
    return bool(low <= stat <= high)


def _ks_accepts(x: np.ndarray, sigma: float) -> bool:
    return bool(stats.kstest(x, "norm", args=(0.0, sigma)).pvalue >= ALPHA)


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    x = ChaCha20Random().gaussian_noise(SIGMA, (N,))
    assert x.shape == (N,) and x.dtype == np.float64
    return x


@pytest.mark.parametrize("test", [_variance_test_accepts, _ks_accepts])
def test_noise_has_the_right_sigma_and_not_a_wrong_one(
    noise: np.ndarray, test: Callable[[np.ndarray, float], bool]
) -> None:
    assert test(noise, SIGMA)
    assert not test(noise, SIGMA * 2 / 3)
    assert not test(noise, SIGMA * 3 / 2)


def test_noise_mean_is_zero(noise: np.ndarray) -> None:
    assert abs(float(noise.mean())) * np.sqrt(N) / SIGMA < stats.norm.isf(ALPHA / 2)


def test_standard_normal_is_standard_and_uncorrelated() -> None:
    x = ChaCha20Random().standard_normal(N + 1)  # odd n: the last pair is cut
    assert x.shape == (N + 1,)
    assert _variance_test_accepts(x, 1.0) and _ks_accepts(x, 1.0)
    # Lag-1 correlation of i.i.d. samples is ~N(0, 1/n).
    r = float(np.corrcoef(x[:-1], x[1:])[0, 1])
    assert abs(r) * np.sqrt(N) < stats.norm.isf(ALPHA / 2)
    assert abs(float(x.mean())) * np.sqrt(N) < stats.norm.isf(ALPHA / 2)


def test_standard_normal_tails_are_gaussian() -> None:
    z = ChaCha20Random().standard_normal(N)
    # P(|Z| > 3) = 0.0027: a transform bug usually shows in the tails.
    assert stats.binomtest(int(np.sum(np.abs(z) > 3)), N, 0.0026998).pvalue > ALPHA


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1001])
def test_standard_normal_returns_exactly_n(n: int) -> None:
    assert ChaCha20Random().standard_normal(n).shape == (n,)


def test_uniforms_are_in_the_open_interval_with_53_bits() -> None:
    u = ChaCha20Random().uniform(N)
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    assert stats.kstest(u, "uniform").pvalue >= ALPHA
    # Values lie on the grid (k + 1/2)·2⁻⁵³.
    assert np.all((u * 2.0**53 - 0.5) % 1 == 0)


def test_bernoulli_rate() -> None:
    hits = int(ChaCha20Random().bernoulli(N, 0.1).sum())
    assert stats.binomtest(hits, N, 0.1).pvalue >= ALPHA
    assert not ChaCha20Random().bernoulli(100, 0.0).any()
    assert ChaCha20Random().bernoulli(100, 1.0).all()


def test_poisson_sampler_rate_and_length() -> None:
    sampler = PoissonBatchSampler(
        num_samples=1000, sample_rate=0.05, steps=200, rng=ChaCha20Random()
    )
    batches = list(sampler)
    assert len(batches) == len(sampler) == 200
    total = sum(len(b) for b in batches)
    assert stats.binomtest(total, 200 * 1000, 0.05).pvalue > ALPHA
    assert all(len(set(b)) == len(b) and all(0 <= i < 1000 for i in b) for b in batches)


def test_fixed_key_is_reproducible_and_warns_and_fresh_keys_differ() -> None:
    with pytest.warns(RuntimeWarning, match="test use only"):
        a = ChaCha20Random.insecure_from_key_for_testing(bytes(32))
    with pytest.warns(RuntimeWarning):
        b = ChaCha20Random.insecure_from_key_for_testing(bytes(32))
    assert np.array_equal(a.gaussian_noise(1.0, (5, 7)), b.gaussian_noise(1.0, (5, 7)))
    assert not np.array_equal(ChaCha20Random().uniform(8), ChaCha20Random().uniform(8))


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda r: r.gaussian_noise(float("nan"), (3,)), "std must be finite"),
        (lambda r: r.gaussian_noise(-1.0, (3,)), "std must be finite"),
        (lambda r: r.bernoulli(3, 1.5), "p must be in"),
        (lambda r: r.random_bytes(-1), "n must be >= 0"),
        (
            lambda r: r.insecure_from_key_for_testing(bytes(31)),
            "key must be 32 bytes; found 31",
        ),
    ],
)
def test_bad_arguments(call: Callable[[ChaCha20Random], Any], error: str) -> None:
    with pytest.raises(dp.InvalidNoiseInputError, match=error):
        call(ChaCha20Random())


def test_keystream_is_chacha20_of_zeros_across_block_boundaries() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    from dp.noise import _BLOCK_WORDS

    key = bytes(range(32))
    with pytest.warns(RuntimeWarning):
        rng = ChaCha20Random.insecure_from_key_for_testing(key)
    n = 2 * _BLOCK_WORDS + 3
    words = rng._words(n)
    ref = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    assert words.tobytes() == ref.update(bytes(8 * n))
    assert rng.random_bytes(16) == ref.update(bytes(16))  # one shared stream


def test_optimizer_noise_is_the_csprng_stream() -> None:
    """DPOptimizer.add_noise draws exactly the CSPRNG's Gaussian at σ·C."""
    p = torch.nn.Parameter(torch.zeros(5000))
    opt = CSPRNGDPOptimizer(
        torch.optim.SGD([p], lr=1.0),
        noise_multiplier=1.5,
        max_grad_norm=2.0,
        normaliser=10.0,
        rng=kit.fixed_rng(5),
    )
    p.summed_grad = torch.zeros(5000)  # type: ignore[attr-defined]
    p.grad_sample = torch.zeros(1, 5000)  # type: ignore[attr-defined]
    before = torch.get_rng_state()
    opt.add_noise()
    opt.scale_grad()
    expected = kit.fixed_rng(5).gaussian_noise(3.0, (5000,)) / 10.0
    assert p.grad is not None
    np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert _variance_test_accepts(p.grad.double().numpy(), 0.3)
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("ahead", [False, True], ids=["inline", "drawn-ahead"])
def test_dp_step_draws_noise_and_batches_only_from_the_csprng(
    ledger_path: Path,
    data: TensorDataset,
    monkeypatch: pytest.MonkeyPatch,
    ahead: bool,
) -> None:
    if ahead:
        monkeypatch.setattr(dp.local_training, "DRAW_AHEAD_MIN_PARAMS", 0)
    client = kit.client(ledger_path)
    model = kit.model()

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch RNG used during a DP step")

    for name in ("normal", "randn", "rand", "randint", "randperm", "bernoulli"):
        monkeypatch.setattr(torch, name, forbidden)
    monkeypatch.setattr(torch.Tensor, "normal_", forbidden)
    import opacus.optimizers.optimizer as opacus_optimizer

    monkeypatch.setattr(opacus_optimizer, "_generate_noise", forbidden)
    calls: list[float] = []
    real = SecureRandom.gaussian_noise_into

    def spy(self: SecureRandom, std: float, out: np.ndarray) -> None:
        calls.append(std)
        real(self, std, out)

    monkeypatch.setattr(SecureRandom, "gaussian_noise_into", spy)
    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()[1].copy()  # type: ignore[index]
    res = client.train_round(model, data, round_idx=0, lr=0.5)
    client.wait_for_prefetched_noise()
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # type: ignore[index]
    # One draw per parameter tensor (weight, bias) per step, at std σ·C, for
    # this round and, drawn ahead once this one ended, for the next one.
    assert calls == [1.0 * 1.0] * (2 * res.steps * (2 if ahead else 1))


def test_noise_reaches_the_update(tmp_path: Path, data: TensorDataset) -> None:
    # Same data, same (zero) start, two clients: only the CSPRNG noise and
    # batches differ, so the updates must differ.
    states = []
    for name in ("a", "b"):
        model = kit.model()
        for param in model.parameters():
            torch.nn.init.zeros_(param)
        client = kit.client(tmp_path / f"{name}.jsonl", client_id=name)
        states.append(client.train_round(model, data, round_idx=0, lr=0.5).state_dict)
    assert not torch.equal(states[0]["0.weight"], states[1]["0.weight"])
