"""The two ring back ends, bit for bit against each other, and their choice.

CI has no GPU, so ``RingBackend.TORCH`` runs here on CPU tensors: the same
code a CUDA device runs, minus the Triton kernel (checked in test_gpu.py).
Vectors stay short because eager ChaCha20 on CPU is slow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from secagg import (
    ConfigError,
    RingBackend,
    Round,
    SecAggAggregate,
    SecAggConfig,
    SecurityMode,
    quantize_input,
    run_quantized_session,
    run_session,
)
from secagg import ring_torch as rt
from secagg.backend import mask_sum_for, resolve_backend, select_ring
from secagg.prg_torch import signed_mask_sum
from secagg.ring_numpy import NumpyRing
from secagg.ring_torch import TorchRing
from tests.secagg.conftest import LENIENT, config, drive, keys, replay, residues

NP, TORCH = RingBackend.NUMPY, RingBackend.TORCH
BITS = [8, 13, 16, 24, 31, 32, 33, 40, 57, 62]


@pytest.mark.parametrize("bits", BITS)
def test_torch_ring_ops_match_numpy(bits: int) -> None:
    n, t = NumpyRing(bits), TorchRing(bits)
    a, b = residues(bits), residues(bits, seed=1)
    ta, tb = t.adopt(a), t.adopt(b)
    assert t.to_host(t.add(ta, tb)).tolist() == n.add(a, b).tolist()
    assert t.to_host(t.sub(ta, tb)).tolist() == n.sub(a, b).tolist()
    assert t.centered(ta).tolist() == n.centered(a).tolist()
    signed = n.centered(a)
    assert t.to_host(t.from_signed(signed)).tolist() == a.tolist()
    assert n.adopt(ta).tolist() == a.tolist()
    k, s = keys(3, bits), [1, -1, 1]
    assert t.to_host(t.masked(ta, k, s)).tolist() == n.masked(a, k, s).tolist()


@pytest.mark.parametrize("bits", BITS)
def test_torch_wire_is_the_numpy_wire(bits: int) -> None:
    n, t = NumpyRing(bits), TorchRing(bits)
    a = residues(bits, 37)
    wire = bytes(n.to_wire(a))
    assert bytes(t.to_wire(t.adopt(a))) == wire
    assert t.to_host(t.from_wire(wire, 37)).tolist() == a.tolist()
    assert n.from_wire(wire, 37).tolist() == a.tolist()
    assert t.from_wire(b"", 0).shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("weight", [1, 5, 15])
def test_quantize_is_bit_identical(
    dtype: torch.dtype, weight: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 48-coordinate block makes 101 coordinates span three rounding blocks
    # with a ragged tail, so each block's keystream counter is exercised.
    monkeypatch.setattr(rt, "_CHUNK", 48)
    cfg = config(d=101, clip=0.75)
    x = torch.linspace(-2.0, 2.0, 101, dtype=dtype)
    host = quantize_input(x, weight, cfg, entropy=replay(b"q"), backend=NP)
    dev = quantize_input(x, weight, cfg, entropy=replay(b"q"), backend=TORCH)
    assert isinstance(dev.values, torch.Tensor) and dev.values.dtype == torch.int64
    assert dev.values.tolist() == host.values.tolist()
    assert (dev.weight, dev.clipped, dev.bits) == (host.weight, host.clipped, host.bits)


def test_backend_choice_is_made_in_one_place() -> None:
    assert resolve_backend("cpu", None) is NP
    assert resolve_backend(torch.device("cuda"), None) is TORCH
    assert resolve_backend("cpu", TORCH) is TORCH
    assert isinstance(select_ring(32), NumpyRing)
    assert isinstance(select_ring(32, backend=TORCH), TorchRing)
    assert mask_sum_for("cpu") is signed_mask_sum
    with pytest.raises(ConfigError, match="backend must be a RingBackend, got 'torch'"):
        resolve_backend("cpu", "torch")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"device must be a torch\.device or str"):
        select_ring(32, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown device 'gpu7'"):
        select_ring(32, "gpu7")


def _lockstep(
    cfg: SecAggConfig, drops: dict[int, Round], device: str = "cpu"
) -> dict[RingBackend, SecAggAggregate]:
    """One session per back end with identical entropy (NUMPY on the host,
    TORCH on ``device`` with a tiny mask batch, so the dropped clients' masks
    come in many chunks); every message must be the same bytes on both."""
    x = torch.linspace(-1.0, 1.0, cfg.vector_length, dtype=torch.float64)
    sent: dict[RingBackend, list[bytes]] = {}
    aggs = {}
    for be, dev in ((NP, "cpu"), (TORCH, device)):

        def inputs(cfg: SecAggConfig, i: int, dev: str = dev) -> Any:
            return quantize_input(
                x * i, i + 1, cfg, entropy=replay(b"r%d" % i), device=dev
            )

        sent[be] = []
        run = drive(
            cfg, absent=drops, inputs=inputs, tap=sent[be].append, entropy=b"",
            backend=be, device=dev, chunk_elems=32 if be is TORCH else None,
        )  # fmt: skip
        aggs[be] = run.server.unmask()
    assert sent[NP] == sent[TORCH]
    return aggs


@pytest.mark.parametrize("bits", [32, 40])
def test_sessions_give_identical_wire_bytes_and_sums(bits: int) -> None:
    cfg = config(n=6, t=3, d=45, ring_bits=bits)
    drops = {1: Round.MASKED_INPUT, 4: Round.MASKED_INPUT, 2: Round.UNMASKING}
    aggs = _lockstep(cfg, drops)
    a, b = aggs[NP], aggs[TORCH]
    assert a.dropped == b.dropped == frozenset({1, 4})
    assert a.ring_sum.tolist() == b.ring_sum.tolist()
    assert torch.equal(a.weighted_sum, b.weighted_sum)
    assert (a.total_weight, a.clipped) == (b.total_weight, b.clipped)


def test_quantized_inputs_of_one_back_end_run_on_the_other() -> None:
    cfg = config(n=5, t=3, d=30)
    x = torch.linspace(-0.9, 0.9, 30)
    host = {i: quantize_input(x, i + 1, cfg, entropy=replay(b"%d" % i))
            for i in range(5)}  # fmt: skip
    drop = {0: Round.MASKED_INPUT, 3: Round.UNMASKING}
    a = run_quantized_session(host, cfg, drop=drop, policy=LENIENT)
    b = run_quantized_session(host, cfg, drop=drop, policy=LENIENT, backend=TORCH)
    assert a.ring_sum.tolist() == b.ring_sum.tolist()
    assert torch.equal(a.weighted_sum, b.weighted_sum)
    assert a.bytes_sent == b.bytes_sent  # the wire format is unchanged


@pytest.mark.parametrize("mode", list(SecurityMode))
def test_run_session_on_the_torch_backend(mode: SecurityMode) -> None:
    cfg = config(n=4, t=3, d=20, mode=mode)
    xs = [torch.linspace(-0.5, 0.5, 20) * (i + 1) / 4 for i in range(4)]
    ws = [1, 2, 3, 4]
    r = run_session(xs, ws, cfg, drop={1: Round.MASKED_INPUT}, backend=TORCH)
    exact = torch.zeros(20, dtype=torch.float64)
    for i in (0, 2, 3):
        exact += ws[i] * xs[i].double()
    assert r.total_weight == 8 and r.survivors == frozenset({0, 2, 3})
    assert r.weighted_sum.dtype == torch.float64
    assert torch.allclose(r.weighted_sum, exact, atol=8 / cfg.scale)


# On CUDA (skipped without it): the Triton mask kernel and device tensors
# end to end, against the numpy path on the host.


@pytest.mark.gpu
def test_cuda_quantize_matches_the_host() -> None:
    d = (1 << 20) + 37  # two rounding blocks and a ragged tail
    cfg = SecAggConfig(num_clients=4, threshold=3, vector_length=d, max_weight=9)
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))  # test data
    host = quantize_input(x, 7, cfg, entropy=replay(b"g"))
    dev = quantize_input(x.cuda(), 7, cfg, entropy=replay(b"g"))
    assert isinstance(dev.values, torch.Tensor) and dev.values.is_cuda
    assert dev.clipped == host.clipped
    assert np.array_equal(dev.values.cpu().numpy(), np.asarray(host.values, np.int64))


@pytest.mark.gpu
@pytest.mark.parametrize("bits", BITS)
def test_cuda_wire_matches_the_host(bits: int) -> None:
    n, t = NumpyRing(bits), TorchRing(bits, "cuda")
    a = residues(bits, 1000)
    wire = bytes(n.to_wire(a))
    assert bytes(t.to_wire(t.adopt(a))) == wire
    back = t.from_wire(wire, 1000)
    assert back.is_cuda and back.cpu().tolist() == a.tolist()


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [32, 40])
def test_cuda_session_gives_identical_bytes_and_sum(bits: int) -> None:
    cfg = config(n=6, t=3, d=5000, ring_bits=bits)
    drops = {1: Round.MASKED_INPUT, 4: Round.MASKED_INPUT, 2: Round.UNMASKING}
    aggs = _lockstep(cfg, drops, device="cuda")
    a, b = aggs[NP], aggs[TORCH]
    assert b.weighted_sum.is_cuda
    assert a.ring_sum.tolist() == b.ring_sum.tolist()
    assert torch.equal(a.weighted_sum, b.weighted_sum.cpu())


@pytest.mark.gpu
def test_cuda_run_session_defaults_to_the_device_path() -> None:
    d = 100_000
    cfg = SecAggConfig(num_clients=8, threshold=5, vector_length=d, max_weight=4)
    xs = [torch.full((d,), 0.01 * i, device="cuda") for i in range(8)]
    r = run_session(xs, [1] * 8, cfg, drop={0: Round.MASKED_INPUT}, device="cuda")
    assert r.weighted_sum.is_cuda and r.total_weight == 7
    exact = sum(0.01 * i for i in range(1, 8))
    assert torch.allclose(r.weighted_sum.cpu(), torch.full((d,), exact,
                          dtype=torch.float64), atol=7 / cfg.scale)  # fmt: skip
