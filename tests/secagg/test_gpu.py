"""GPU mask paths (Triton kernel, eager torch on CUDA) against the CPU oracle.

Tests marked ``gpu`` are skipped without CUDA. The last
test runs the Triton kernel through Triton's CPU interpreter where Triton is
installed, so the kernel's arithmetic is also checked on GPU-less machines.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

from secagg import BackendUnavailable, prg_triton
from secagg.backend import mask_sum_for
from secagg.prg_torch import chacha20_words, ring_mask, signed_mask_sum
from tests.secagg.conftest import CPU
from tests.secagg.conftest import keys as _keys

REPO = Path(__file__).resolve().parents[2]


def _signs(n: int) -> list[int]:
    return [1 if (i * 5) % 3 else -1 for i in range(n)]


@pytest.mark.gpu
@pytest.mark.parametrize("n_words", [1, 16, 1000, 1 << 20])
def test_cuda_keystream_equals_cpu(n_words):
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a00000000")
    cpu = chacha20_words(key, n_words, device=CPU, counter=7, nonce=nonce)
    gpu = chacha20_words(key, n_words, device="cuda", counter=7, nonce=nonce)
    assert gpu.device.type == "cuda"
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [1, 8, 16, 31, 32, 33, 40, 62])
def test_ring_mask_cuda_equals_cpu(bits):
    key = _keys(1, 3)[0]
    assert torch.equal(
        ring_mask(key, 4099, bits, device="cuda").cpu(),
        ring_mask(key, 4099, bits, device=CPU),
    )


CASES = [
    (1, 1, 32),
    (3, 17, 8),
    (5, 4096, 16),
    (7, 100_003, 32),
    (40, 33_333, 32),
    (2, 1000, 31),
    (4, 4097, 40),
    (3, 9999, 62),
]


@pytest.mark.gpu
@pytest.mark.parametrize(("n_keys", "length", "bits"), CASES)
def test_triton_kernel_equals_cpu_oracle(n_keys, length, bits):
    if not prg_triton.triton_available():
        pytest.skip("Triton is not installed")
    keys, signs = _keys(n_keys, length), _signs(n_keys)
    cpu = signed_mask_sum(keys, signs, length, bits, CPU)
    gpu = prg_triton.signed_mask_sum_triton(keys, signs, length, bits, "cuda")
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.gpu
@pytest.mark.parametrize(("n_keys", "length", "bits"), CASES)
def test_chosen_cuda_kernel_equals_cpu_oracle(n_keys, length, bits):
    keys, signs = _keys(n_keys, length + 1), _signs(n_keys)
    cpu = signed_mask_sum(keys, signs, length, bits, CPU)
    out = torch.full((length,), -1, dtype=torch.int64, device="cuda")
    gpu = mask_sum_for("cuda")(keys, signs, length, bits, "cuda", out=out)
    assert gpu is out
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.gpu
@pytest.mark.parametrize(("n_keys", "length", "bits"), CASES)
def test_eager_torch_on_cuda_equals_cpu_oracle(n_keys, length, bits):
    # The kernel of CUDA machines without Triton.
    keys, signs = _keys(n_keys, length + 2), _signs(n_keys)
    cpu = signed_mask_sum(keys, signs, length, bits, CPU)
    with mock.patch.object(prg_triton, "triton_available", lambda: False):
        kernel = mask_sum_for("cuda")
    assert kernel is signed_mask_sum
    gpu = kernel(keys, signs, length, bits, "cuda", chunk_elems=1 << 16)
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.gpu
def test_triton_large_mask_matches_eager_cuda():
    if not prg_triton.triton_available():
        pytest.skip("Triton is not installed")
    assert mask_sum_for("cuda") is prg_triton.signed_mask_sum_triton
    keys, signs = _keys(16, 99), _signs(16)
    n = 3_000_017
    fused = prg_triton.signed_mask_sum_triton(keys, signs, n, 32, "cuda")
    eager = signed_mask_sum(keys, signs, n, 32, "cuda")
    assert torch.equal(fused, eager)


def test_triton_kernel_refuses_without_triton_or_cuda() -> None:
    if importlib.util.find_spec("triton") is None:
        with pytest.raises(BackendUnavailable, match="needs Triton, not installed"):
            prg_triton.signed_mask_sum_triton([], [], 4, 32, CPU)
    elif os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(BackendUnavailable, match="needs a CUDA device, got cpu"):
            prg_triton.signed_mask_sum_triton([], [], 4, 32, CPU)


@pytest.mark.gpu
def test_triton_empty_and_zero_keys():
    if not prg_triton.triton_available():
        pytest.skip("Triton is not installed")
    assert prg_triton.signed_mask_sum_triton([], [], 9, 32, "cuda").sum() == 0
    assert (
        prg_triton.signed_mask_sum_triton([bytes(32)], [1], 0, 32, "cuda").numel() == 0
    )


def test_triton_kernel_in_cpu_interpreter():
    triton = pytest.importorskip("triton")
    major, minor = (int(p) for p in triton.__version__.split(".")[:2])
    if (major, minor) < (3, 8):
        pytest.skip("older Triton interpreters fail with numpy 2 scalars")
    code = """
import torch
from secagg.prg_torch import signed_mask_sum
from secagg.prg_triton import signed_mask_sum_triton
keys = [bytes((13 * i + j) % 256 for j in range(32)) for i in range(3)]
for bits in (8, 32, 40, 62):
    for n in (1, 17, 300):
        a = signed_mask_sum(keys, [1, -1, 1], n, bits, "cpu")
        b = signed_mask_sum_triton(keys, [1, -1, 1], n, bits, "cpu")
        assert torch.equal(a, b), (bits, n)
"""
    env = dict(os.environ, TRITON_INTERPRET="1")
    subprocess.run(
        [sys.executable, "-c", code], check=True, env=env, cwd=REPO, timeout=300
    )
