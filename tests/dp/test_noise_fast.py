"""The fast noise paths: AES-256-CTR keystream, cache-sized Gaussians, device noise.

Known answers: the AES-CTR keystream equals an independent computation (AES
in ECB mode over big-endian counter blocks, itself pinned to NIST SP 800-38A
F.1.5 / F.5.5), and the torch ChaCha20 block function equals pyca's ChaCha20
bit for bit.  Statistics: every accepting test runs at α = 1e-4 two-sided, and
the same samples must reject a σ off by a factor 2/3 or 3/2.
"""

from __future__ import annotations

import gc
import hashlib
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scipy import stats
from torch import nn

import dp
import dp.device_noise as device_noise
import dp.noise as noise_mod
import dp.noise_prefetch as noise_prefetch
from dp import DPConfigError, PrivacyError, PrivateClient
from dp.device_noise import DeviceGaussian, chacha20_block_words
from dp.engine import _Noise
from dp.noise import ChaCha20Random, Keystream, SecureRandom
from dp.noise_prefetch import PrefetchedNoise
from tests.dp.kit import ROWS as N_EXAMPLES
from tests.dp.kit import config, dataset, fixed_rng
from tests.dp.kit import mlp as model

ALPHA = 1e-4
N = 200_000
SIGMA = 1.7
NIST_KEY = bytes.fromhex(
    "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"
)


def _fixed(keystream: Keystream, key: bytes = bytes(range(32))) -> SecureRandom:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return SecureRandom.insecure_from_key_for_testing(key, keystream)


def _variance_ok(x: np.ndarray, sigma: float) -> bool:
    stat = float(np.sum(x.astype(np.float64) ** 2)) / sigma**2
    return bool(
        stats.chi2.ppf(ALPHA / 2, x.size) <= stat <= stats.chi2.isf(ALPHA / 2, x.size)
    )


def _ks_ok(x: np.ndarray, sigma: float) -> bool:
    return bool(stats.kstest(x.astype(np.float64) / sigma, "norm").pvalue >= ALPHA)


def _aes_ctr_oracle(key: bytes, nbytes: int) -> bytes:
    """AES-256 of the counter blocks 0, 1, 2, ... (128-bit big-endian), by ECB."""
    blocks = b"".join(i.to_bytes(16, "big") for i in range(-(-nbytes // 16)))
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return (ecb.update(blocks) + ecb.finalize())[:nbytes]


def test_the_ecb_oracle_is_nist_aes256() -> None:
    ecb = Cipher(algorithms.AES(NIST_KEY), modes.ECB()).encryptor()
    # SP 800-38A F.1.5 (ECB-AES256, block 1) and F.5.5 (CTR-AES256, block 1).
    assert ecb.update(bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")) == (
        bytes.fromhex("f3eed1bdb5d2a03c064b5a7e3db181f8")
    )
    counter_block = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    assert ecb.update(counter_block) == bytes.fromhex(
        "0bdf7df1591716335e9a8b15c860c502"
    )


def test_aes_keystream_is_aes_ctr_of_zeros_across_block_boundaries() -> None:
    key = bytes(range(1, 33))
    rng = _fixed(Keystream.AES256_CTR, key)
    n = 2 * noise_mod._BLOCK_WORDS + 5
    oracle = _aes_ctr_oracle(key, 8 * n + 24)
    assert rng._words(n).tobytes() == oracle[: 8 * n]
    assert rng.random_bytes(24) == oracle[8 * n :]  # one shared stream


def test_rekeying_takes_the_next_key_from_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(noise_mod, "REKEY_BYTES", 64)
    key = bytes(range(32))
    rng = _fixed(Keystream.AES256_CTR, key)
    first = rng.random_bytes(64)
    second = rng.random_bytes(16)  # over the limit: re-key first
    stream = _aes_ctr_oracle(key, 96)
    assert first == stream[:64]
    new_key = stream[64:96]
    assert second == _aes_ctr_oracle(new_key, 16)


def test_default_keystream_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(noise_mod, "cpu_has_aes", lambda: True)
    assert SecureRandom().keystream is Keystream.AES256_CTR
    monkeypatch.setattr(noise_mod, "cpu_has_aes", lambda: False)
    assert SecureRandom().keystream is Keystream.CHACHA20
    assert ChaCha20Random().keystream is Keystream.CHACHA20


@pytest.mark.parametrize("keystream", list(Keystream))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_noise_into_has_the_right_sigma_and_not_a_wrong_one(
    keystream: Keystream, dtype: type
) -> None:
    x: np.ndarray = np.empty(N, dtype=dtype)
    SecureRandom(keystream).gaussian_noise_into(SIGMA, x)
    assert _variance_ok(x, SIGMA) and _ks_ok(x, SIGMA)
    for factor in (2 / 3, 3 / 2):
        assert not _variance_ok(x, factor * SIGMA)
        assert not _ks_ok(x, factor * SIGMA)


@pytest.mark.parametrize("keystream", list(Keystream))
def test_standard_normal_tails_and_independence(keystream: Keystream) -> None:
    z = SecureRandom(keystream).standard_normal(N + 3)
    assert stats.binomtest(int(np.sum(np.abs(z) > 3)), z.size, 0.0026998).pvalue > (
        ALPHA
    )
    r = float(np.corrcoef(z[:-1], z[1:])[0, 1])
    assert abs(r) * np.sqrt(z.size) < stats.norm.isf(ALPHA / 2)


def test_noise_into_float32_is_the_float64_stream_rounded_once() -> None:
    wide = _fixed(Keystream.AES256_CTR).gaussian_noise(2.5, (3, 40_001))
    narrow = np.empty((3, 40_001), dtype=np.float32)
    _fixed(Keystream.AES256_CTR).gaussian_noise_into(2.5, narrow)
    assert np.array_equal(narrow, wide.astype(np.float32))


def test_threads_sharing_a_generator_draw_whole_arrays_in_turn() -> None:
    # Each call holds the generator's lock, so concurrent calls consume the
    # stream call by call: together they draw exactly the arrays of a
    # sequential run, in some order.  Interleaved chunks would differ.
    shared, twin = _fixed(Keystream.AES256_CTR), _fixed(Keystream.AES256_CTR)
    calls, size = 12, 40_000
    drawn: list[bytes] = []

    def draw() -> None:
        for _ in range(calls):
            out = np.empty(size, dtype=np.float32)
            shared.gaussian_noise_into(1.0, out)
            drawn.append(out.tobytes())

    workers = [threading.Thread(target=draw) for _ in range(2)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    expected = []
    for _ in range(2 * calls):
        out = np.empty(size, dtype=np.float32)
        twin.gaussian_noise_into(1.0, out)
        expected.append(out.tobytes())
    assert sorted(drawn) == sorted(expected)


#: SHA-256 of a fixed-key draw sequence, pinned from the first polar sampler;
#: every later speed-up must reproduce it bit for bit.
PINNED_SAMPLER_SHA256 = {
    Keystream.AES256_CTR: (
        "26becd3c4eeb60aa6c3b8436047e9d32881b5fc2fe459fe5cd60f694f2c13615"
    ),
    Keystream.CHACHA20: (
        "342174872ff495d542b1561096fad8a4111188b73967255515df9faa5f4d858f"
    ),
}


@pytest.mark.parametrize("keystream", list(Keystream))
def test_the_sampler_reproduces_its_pinned_output(keystream: Keystream) -> None:
    rng = _fixed(keystream)
    parts = [
        rng.standard_normal(n).tobytes() for n in (0, 1, 2, 3, 7, 1000, 33000, 100001)
    ]
    f32 = np.empty(70001, dtype=np.float32)
    rng.gaussian_noise_into(0.7, f32)
    f64 = np.empty((3, 5000), dtype=np.float64)
    rng.gaussian_noise_into(1.3, f64)
    parts += [f32.tobytes(), f64.tobytes()]
    parts += [rng.gaussian_noise(2.0, (17,)).tobytes(), rng.uniform(99).tobytes()]
    digest = hashlib.sha256(b"".join(parts)).hexdigest()
    assert digest == PINNED_SAMPLER_SHA256[keystream]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: SecureRandom("aes"), r"keystream must be a Keystream \(AES256_CTR"),  # type: ignore[arg-type]
        (
            lambda: SecureRandom().gaussian_noise_into(1.0, np.empty((4, 4))[:, ::2]),
            "out must be a C-contiguous array",
        ),
        (
            lambda: SecureRandom().gaussian_noise_into(np.inf, np.empty(3)),
            "std must be finite and >= 0; found inf",
        ),
    ],
)
def test_bad_arguments(call: object, error: str) -> None:
    with pytest.raises(dp.InvalidNoiseInputError, match=error):
        call()  # type: ignore[operator]


# ---------------------------------------------------------------- device path


@pytest.mark.parametrize(
    ("counter", "blocks"), [(0, 1), (0, 37), (5, 7), (2**32 - 3, 3)]
)
def test_torch_chacha20_equals_pyca_bit_for_bit(counter: int, blocks: int) -> None:
    key = bytes(range(100, 132))
    words = chacha20_block_words(key, counter, blocks, "cpu")
    nonce = counter.to_bytes(4, "little") + bytes(12)
    ref = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    expected = np.frombuffer(ref.update(bytes(64 * blocks)), dtype="<u4")
    assert words.dtype == torch.int64
    assert np.array_equal(words.numpy(), expected.astype(np.int64))


def test_torch_chacha20_refuses_bad_inputs() -> None:
    with pytest.raises(dp.InvalidNoiseInputError, match="key must be 32 bytes"):
        chacha20_block_words(bytes(31), 0, 1, "cpu")
    with pytest.raises(
        dp.InvalidNoiseInputError, match="32-bit ChaCha20 block counter would overflow"
    ):
        chacha20_block_words(bytes(32), 2**32 - 1, 2, "cpu")


def test_device_noise_statistics_on_cpu() -> None:
    x = DeviceGaussian(SecureRandom()).gaussian_noise(
        SIGMA, (50_000,), device="cpu", dtype=torch.float64
    )
    assert x.shape == (50_000,) and x.dtype == torch.float64
    arr = x.numpy()
    assert _variance_ok(arr, SIGMA) and _ks_ok(arr, SIGMA)
    assert not _variance_ok(arr, SIGMA * 3 / 2) and not _variance_ok(arr, SIGMA * 2 / 3)


def test_device_uniforms_are_the_keystream_words_with_53_bits() -> None:
    host = _fixed(Keystream.CHACHA20)
    gen = DeviceGaussian(host)
    key = _fixed(Keystream.CHACHA20).random_bytes(32)  # what gen took as its key
    u = gen.uniform(24, "cpu")
    words = chacha20_block_words(key, 0, 3, "cpu").numpy()
    k = ((words[0::2] >> 11) << 32) | words[1::2]
    assert np.array_equal(u.numpy(), (k.astype(np.float64) + 0.5) * 2.0**-53)
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0


def test_device_stream_rekeys_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_noise, "REKEY_BYTES", 128)  # two blocks per key
    host = _fixed(Keystream.CHACHA20)
    twin = _fixed(Keystream.CHACHA20)
    gen = DeviceGaussian(host)
    first = gen.uniform(16, "cpu")  # 32 words: both blocks of the first key
    second = gen.uniform(8, "cpu")  # needs a new key
    k1, k2 = twin.random_bytes(32), twin.random_bytes(32)
    w1 = chacha20_block_words(k1, 0, 2, "cpu").numpy()
    w2 = chacha20_block_words(k2, 0, 1, "cpu").numpy()
    assert np.array_equal(first.numpy(), _uniforms(w1))
    assert np.array_equal(second.numpy(), _uniforms(w2))


def _uniforms(words: np.ndarray) -> np.ndarray:
    k = ((words[0::2] >> 11) << 32) | words[1::2]
    out: np.ndarray = (k.astype(np.float64) + 0.5) * 2.0**-53
    return out


@pytest.mark.gpu
def test_cuda_keystream_and_noise() -> None:
    key = bytes(range(32))
    cpu = chacha20_block_words(key, 9, 4097, "cpu")
    gpu = chacha20_block_words(key, 9, 4097, "cuda")
    assert torch.equal(gpu.cpu(), cpu)
    x = DeviceGaussian(SecureRandom()).gaussian_noise(
        SIGMA, (N,), device="cuda", dtype=torch.float32
    )
    assert x.device.type == "cuda" and x.dtype == torch.float32
    arr = x.cpu().numpy()
    assert _variance_ok(arr, SIGMA) and _ks_ok(arr, SIGMA)


def _host_noise_spy(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []
    real = SecureRandom.gaussian_noise_into

    def spy(self: SecureRandom, std: float, out: np.ndarray) -> None:
        calls.append(std)
        real(self, std, out)

    monkeypatch.setattr(SecureRandom, "gaussian_noise_into", spy)
    return calls


def test_the_optimizer_uses_the_device_stream_where_the_model_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On CPU, pretend the parameters live on an accelerator: every draw must
    # then come from DeviceGaussian, none from the host sampler.
    host_calls = _host_noise_spy(monkeypatch)
    device_calls: list[tuple[int, ...]] = []
    real = DeviceGaussian.gaussian_noise

    def spy(self: DeviceGaussian, std: float, shape: tuple[int, ...], **kw: object):
        device_calls.append(shape)
        return real(self, std, shape, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(DeviceGaussian, "gaussian_noise", spy)
    monkeypatch.setattr(_Noise, "on_device", lambda self, device: True)
    c = PrivateClient("g", N_EXAMPLES, config(), tmp_path / "g.jsonl", rng=fixed_rng(1))
    m = model()
    res = c.train_round(m, dataset(), round_idx=0, lr=0.1)
    assert host_calls == []
    assert len(device_calls) == 4 * res.steps  # 4 parameter tensors per step
    assert any(not torch.equal(v, m.state_dict()[k]) for k, v in res.state_dict.items())


@pytest.mark.gpu
def test_a_private_round_on_cuda_draws_noise_on_the_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host_calls = _host_noise_spy(monkeypatch)
    c = PrivateClient("cu", N_EXAMPLES, config(), tmp_path / "cu.jsonl")
    m = model().cuda()
    res = c.train_round(m, dataset(), round_idx=0, lr=0.1)
    assert host_calls == []
    assert all(v.device.type == "cuda" for v in res.state_dict.values())
    assert res.steps == c.steps_per_round


# ------------------------------------------------------- noise drawn ahead


def _thread_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    threads: list[str] = []
    real = SecureRandom.gaussian_noise_into

    def spy(self: SecureRandom, std: float, out: np.ndarray) -> None:
        threads.append(threading.current_thread().name)
        real(self, std, out)

    monkeypatch.setattr(SecureRandom, "gaussian_noise_into", spy)
    return threads


def test_prefetched_noise_is_the_spawned_stream_each_array_once() -> None:
    parent, twin = _fixed(Keystream.AES256_CTR), _fixed(Keystream.AES256_CTR)
    shapes = [(3, 5), (5,)]
    pre = PrefetchedNoise(parent.spawn(), std=0.7, shapes=shapes, steps=2)
    child = twin.spawn()
    assert parent.random_bytes(8) == twin.random_bytes(8)  # same parent stream
    for _ in range(2):
        for shape in shapes:
            expected = np.empty(shape, dtype=np.float32)
            child.gaussian_noise_into(0.7, expected)
            assert np.array_equal(pre.take(shape, 0.7), expected)
    assert pre.remaining == 0
    with pytest.raises(PrivacyError, match=r"draw 4 wants nothing at std 0\.7"):
        pre.take((5,), 0.7)


def test_prefetched_noise_refuses_draws_out_of_step() -> None:
    pre = PrefetchedNoise(SecureRandom(), std=1.0, shapes=[(4,), (2,)], steps=1)
    with pytest.raises(
        PrivacyError,
        match=r"^prefetched noise out of step: draw 0 wants \(4,\) at std 1\.0; "
        r"asked for \(2,\) at std 1\.0$",
    ):
        pre.take((2,), 1.0)
    with pytest.raises(PrivacyError, match=r"asked for \(4,\) at std 2\.0$"):
        pre.take((4,), 2.0)


def test_a_failed_prefetch_is_reported_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: SecureRandom, std: float, out: np.ndarray) -> None:
        raise RuntimeError("keystream exhausted")

    monkeypatch.setattr(SecureRandom, "gaussian_noise_into", broken)
    pre = PrefetchedNoise(SecureRandom(), std=1.0, shapes=[(4,)], steps=1)
    with pytest.raises(
        PrivacyError, match="noise prefetch failed: keystream exhausted"
    ):
        pre.take((4,), 1.0)


def test_prefetched_noise_stays_within_its_lookahead() -> None:
    pre = PrefetchedNoise(
        SecureRandom(), std=1.0, shapes=[(64,)], steps=10, lookahead=2
    )
    deadline = time.monotonic() + 10
    while pre._done < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # ample time to run past the bound, were there none
    assert pre._done == 2
    pre.take((64,), 1.0)
    while pre._done < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert pre._done == 3 and pre.remaining == 9
    pre.cancel()
    pre.wait()  # the drawing thread ends on cancel, not at the round's end


def test_cancelled_noise_is_never_handed_out() -> None:
    pre = PrefetchedNoise(SecureRandom(), std=1.0, shapes=[(8,)], steps=3)
    pre.wait()
    pre.cancel()
    assert not pre.fits(std=1.0, shapes=[(8,)], steps=3)
    with pytest.raises(PrivacyError, match=r"^prefetched noise was cancelled$"):
        pre.take((8,), 1.0)


def test_lookahead_must_be_positive() -> None:
    with pytest.raises(
        PrivacyError, match=r"^lookahead must be >= 1 or None; found 0$"
    ):
        PrefetchedNoise(SecureRandom(), std=1.0, shapes=[(8,)], steps=1, lookahead=0)


def test_a_small_model_draws_its_noise_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = _thread_spy(monkeypatch)
    c = PrivateClient("s", N_EXAMPLES, config(), tmp_path / "s.jsonl")
    res = c.train_round(model(), dataset(), round_idx=0, lr=0.1)
    assert threads == ["MainThread"] * (4 * res.steps)
    assert c._ahead is None and c._trainer._prefetched is None


@pytest.mark.usefixtures("draw_ahead")
def test_a_round_draws_its_noise_off_the_main_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = _thread_spy(monkeypatch)
    c = PrivateClient(
        "i", N_EXAMPLES, config(), tmp_path / "i.jsonl", rng=fixed_rng(3),
        prefetch_noise=False,
    )  # fmt: skip
    res = c.train_round(model(), dataset(), round_idx=0, lr=0.1)
    assert threads == ["dp-noise-prefetch"] * (4 * res.steps)
    assert c._trainer._prefetched is None  # nothing drawn for a next round


@pytest.mark.usefixtures("draw_ahead")
def test_a_client_draws_its_next_round_while_it_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = _thread_spy(monkeypatch)
    ahead = PrivateClient(
        "p", N_EXAMPLES, config(), tmp_path / "p.jsonl", rng=fixed_rng(3)
    )
    in_round = PrivateClient(
        "i", N_EXAMPLES, config(), tmp_path / "i.jsonl", rng=fixed_rng(3),
        prefetch_noise=False,
    )  # fmt: skip
    m = model()
    first = ahead.train_round(m, dataset(), round_idx=0, lr=0.1)
    same = in_round.train_round(m, dataset(), round_idx=0, lr=0.1)
    # Round 0 has nothing drawn ahead: the same stream as the other client.
    assert all(torch.equal(first.state_dict[k], v) for k, v in same.state_dict.items())
    ahead.wait_for_prefetched_noise()
    drawn = ahead._trainer._prefetched
    assert drawn is not None and drawn.remaining == 4 * ahead.steps_per_round
    assert ahead._projection is not None  # the next round's ε, projected ahead
    del threads[:]
    second = ahead.train_round(m, dataset(), round_idx=1, lr=0.1)
    assert drawn.remaining == 0  # round 1 consumed exactly what was drawn ahead
    assert threads.count("MainThread") == 0
    assert any(
        not torch.equal(v, m.state_dict()[k]) for k, v in second.state_dict.items()
    )
    ahead.wait_for_prefetched_noise()


@pytest.mark.usefixtures("draw_ahead")
def test_no_noise_is_drawn_for_a_round_past_the_budget(tmp_path: Path) -> None:
    probe = PrivateClient("b", N_EXAMPLES, config(), tmp_path / "probe.jsonl")
    one_round = probe.projected_epsilon()
    cfg = config(epsilon_budget=one_round * 1.001, planned_rounds=1)
    c = PrivateClient("b", N_EXAMPLES, cfg, tmp_path / "b.jsonl")
    c.train_round(model(), dataset(), round_idx=0, lr=0.1)
    c.wait_for_prefetched_noise()
    assert not c.can_train() and c._trainer._prefetched is None


@pytest.mark.usefixtures("draw_ahead")
def test_prefetched_noise_is_never_reused_after_a_failed_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = PrivateClient("f", N_EXAMPLES, config(), tmp_path / "f.jsonl")
    m = model()
    c.train_round(m, dataset(), round_idx=0, lr=0.1)
    c.wait_for_prefetched_noise()
    drawn_ahead = c._trainer._prefetched
    assert drawn_ahead is not None
    with pytest.raises(PrivacyError, match="one loss per example"):
        c.train_round(m, dataset(), round_idx=1, lr=0.1, loss_fn=nn.CrossEntropyLoss())
    assert c._trainer._prefetched is None  # claimed by the failed round, discarded
    assert c._trainer._wrapped is None  # and its half-done step's wrap with it
    assert drawn_ahead._cancelled and all(a is None for a in drawn_ahead._arrays)
    served: list[PrefetchedNoise] = []
    real = PrefetchedNoise.take

    def spy(self: PrefetchedNoise, shape: tuple[int, ...], std: float) -> Any:
        served.append(self)
        return real(self, shape, std)

    monkeypatch.setattr(PrefetchedNoise, "take", spy)
    res = c.train_round(m, dataset(), round_idx=2, lr=0.1)
    assert len(served) == 4 * res.steps and drawn_ahead not in served


@pytest.mark.usefixtures("draw_ahead")
def test_next_round_noise_shares_one_budget_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = PrivateClient("a", N_EXAMPLES, config(), tmp_path / "a.jsonl")
    b = PrivateClient("b", N_EXAMPLES, config(), tmp_path / "b.jsonl")
    m = model()
    shapes = [tuple(p.shape) for p in m.parameters()]
    one_round = PrefetchedNoise.nbytes(shapes, a.steps_per_round)
    gc.collect()  # rounds other tests drew ahead and dropped give theirs back
    base = noise_prefetch._reserved
    monkeypatch.setattr(noise_prefetch, "PREFETCH_MAX_BYTES", base + one_round)
    for c in (a, b):
        c.train_round(m, dataset(), round_idx=0, lr=0.1)
        c.wait_for_prefetched_noise()
    assert a._trainer._prefetched is not None and b._trainer._prefetched is None
    assert noise_prefetch._reserved == base + one_round
    a.train_round(m, dataset(), round_idx=1, lr=0.1)  # consumes, then reserves again
    a.wait_for_prefetched_noise()
    assert noise_prefetch._reserved == base + one_round
    a._trainer._prefetched.cancel()  # type: ignore[union-attr]
    assert noise_prefetch._reserved == base
    b.train_round(m, dataset(), round_idx=1, lr=0.1)
    b.wait_for_prefetched_noise()
    assert b._trainer._prefetched is not None  # the budget a gave back
    del b, c  # the loop variable held b too
    gc.collect()
    assert noise_prefetch._reserved == base  # a dropped client's round is freed


def test_prefetch_flag_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(
        DPConfigError, match=r"^prefetch_noise must be True or False; found 'yes'$"
    ):
        flag: Any = "yes"
        PrivateClient(
            "x", N_EXAMPLES, config(), tmp_path / "x.jsonl", prefetch_noise=flag
        )
