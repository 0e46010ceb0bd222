"""The torch ring back end on CPU tensors, bit for bit against the numpy one.

CI has no GPU, so ``RingBackend.TORCH`` runs here on CPU tensors: the same
code a CUDA device runs, minus the Triton kernel (checked in test_gpu.py).
Vectors stay short because eager ChaCha20 on CPU is slow.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch

from secagg import (
    ConfigError,
    InvalidInput,
    InvalidMessage,
    Round,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    SecurityMode,
    quantize_input,
    ring,
    run_quantized_session,
    run_session,
)
from secagg import quantize_torch as qt
from secagg.device_ring import AnyQuantized, RingBackend, resolve_backend
from secagg.messages import MaskedInput
from secagg.quantize_torch import from_host, quantize_tensor, to_host
from secagg.server import SecAggAggregate
from tests.secagg.helpers import LENIENT, config

NP, TORCH = RingBackend.NUMPY, RingBackend.TORCH
BITS = [8, 13, 16, 24, 31, 32, 33, 40, 57, 62]


def replay(label: bytes) -> Callable[[int], bytes]:
    """Deterministic stand-in for os.urandom: the same label replays the same
    bytes, so two back ends get identical keys and rounding bits (tests only).
    """
    counter = itertools.count()

    def entropy(n: int) -> bytes:
        block = label + next(counter).to_bytes(8, "little")
        return hashlib.shake_256(block).digest(n)

    return entropy


def _residues(bits: int, n: int = 64) -> np.ndarray:
    data = hashlib.shake_256(bits.to_bytes(2, "little")).digest(8 * n)
    words = np.frombuffer(data, dtype="<u8") & np.uint64((1 << bits) - 1)
    return words.astype(ring.container_dtype(bits))


@pytest.mark.parametrize("bits", BITS)
def test_torch_ring_ops_match_numpy(bits: int) -> None:
    a, b = _residues(bits), _residues(bits)[::-1].copy()
    ta, tb = (torch.from_numpy(v.astype(np.int64)) for v in (a, b))
    assert ring.add_t(ta, tb, bits).tolist() == ring.add(a, b, bits).tolist()
    assert ring.sub_t(ta, tb, bits).tolist() == ring.sub(a, b, bits).tolist()
    zero = ring.zeros(a.shape[0], bits)
    assert ring.neg_t(ta, bits).tolist() == ring.sub(zero, a, bits).tolist()
    assert (
        ring.decode_centered_t(ta, bits).tolist()
        == ring.decode_centered(a, bits).tolist()
    )
    signed = ring.decode_centered(a, bits)
    assert ring.encode_signed_t(torch.from_numpy(signed), bits).tolist() == ta.tolist()


@pytest.mark.parametrize("bits", BITS)
def test_torch_wire_is_the_numpy_wire(bits: int) -> None:
    a = _residues(bits, 37)
    wire = bytes(ring.to_wire(a, bits))
    t = torch.from_numpy(a.astype(np.int64))
    assert bytes(ring.to_wire_t(t, bits)) == wire
    assert ring.from_wire_t(wire, 37, bits, "cpu").tolist() == a.tolist()
    assert ring.from_wire_t(b"", 0, bits, "cpu").shape == (0,)


def test_torch_wire_rejects_what_numpy_rejects() -> None:
    with pytest.raises(ValueError, match="length"):
        ring.from_wire_t(bytes(7), 2, 32, "cpu")
    high = (1 << 13).to_bytes(2, "little")  # 2^13 needs 14 bits
    with pytest.raises(ValueError, match="exceeds"):
        ring.from_wire_t(high, 1, 13, "cpu")
    negative = bytes(7) + b"\x80"  # bit 63: a negative int64 lane
    with pytest.raises(ValueError, match="exceeds"):
        ring.from_wire_t(negative, 1, 62, "cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("weight", [1, 5, 15])
def test_quantize_tensor_is_bit_identical(
    dtype: torch.dtype, weight: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 48-coordinate block makes 101 coordinates span three rounding blocks
    # with a ragged tail, so each block's keystream counter is exercised.
    monkeypatch.setattr(qt, "_CHUNK", 48)
    cfg = config(d=101, clip=0.75)
    x = torch.linspace(-2.0, 2.0, 101, dtype=dtype)
    host = quantize_input(x, weight, cfg, entropy=replay(b"q"))
    dev = quantize_tensor(x, weight, cfg, entropy=replay(b"q"))
    assert dev.values.dtype == torch.int64
    assert dev.values.tolist() == host.values.tolist()
    assert (dev.weight, dev.clipped, dev.bits) == (
        host.weight,
        host.clipped,
        host.bits,
    )
    assert to_host(dev).values.tolist() == host.values.tolist()
    assert from_host(host, "cpu").values.tolist() == dev.values.tolist()


def test_quantize_tensor_rejects_what_the_host_path_rejects() -> None:
    cfg = config(d=4)
    good = torch.zeros(4)
    cases: list[Callable[[], object]] = [
        lambda: quantize_tensor(torch.tensor([0.0, float("nan"), 0.0, 0.0]), 1, cfg),
        lambda: quantize_tensor(torch.zeros(5), 1, cfg),
        lambda: quantize_tensor(torch.zeros(4, dtype=torch.int64), 1, cfg),
        lambda: quantize_tensor(good, 0, cfg),
        lambda: quantize_tensor(good, True, cfg),
    ]
    for bad in cases:
        with pytest.raises(InvalidInput):
            bad()


def test_backend_defaults_by_device() -> None:
    assert resolve_backend("cpu", None) is NP
    assert resolve_backend(torch.device("cuda"), None) is TORCH
    assert resolve_backend("cpu", TORCH) is TORCH
    with pytest.raises(ConfigError):
        resolve_backend("cpu", "torch")  # type: ignore[arg-type]


def _lockstep(
    cfg: SecAggConfig, drops: dict[int, Round], device: str = "cpu"
) -> dict[RingBackend, SecAggAggregate]:
    """Drive one session per back end with identical entropy (NUMPY on the
    host, TORCH on ``device``); every message a client sends must be the same
    bytes on both.  Returns each aggregate."""
    dev = {NP: "cpu", TORCH: device}
    clients = {
        be: {
            i: SecAggClient(cfg, i, policy=LENIENT, entropy=replay(b"c%d" % i),
                            device=dev[be], backend=be)
            for i in range(cfg.num_clients)
        }
        for be in (NP, TORCH)
    }  # fmt: skip
    servers = {
        NP: SecAggServer(cfg),
        # A tiny batch budget: the dropped clients' masks come in many chunks.
        TORCH: SecAggServer(cfg, device=device, backend=TORCH, chunk_elems=32),
    }
    x = torch.linspace(-1.0, 1.0, cfg.vector_length, dtype=torch.float64)
    inputs: dict[RingBackend, dict[int, AnyQuantized]] = {
        NP: {i: quantize_input(x * i, i + 1, cfg, entropy=replay(b"r%d" % i))
             for i in range(cfg.num_clients)},
        # The torch clients mask device-quantised inputs of the same bits.
        TORCH: {i: quantize_tensor((x * i).to(device), i + 1, cfg,
                                   entropy=replay(b"r%d" % i))
                for i in range(cfg.num_clients)},
    }  # fmt: skip

    def alive(i: int, rnd: Round) -> bool:
        return i not in drops or rnd < drops[i]

    sent: dict[RingBackend, dict[int, bytes]] = {}
    for be in (NP, TORCH):
        sent[be] = {}
        for i, c in clients[be].items():
            if alive(i, Round.ADVERTISE_KEYS):
                servers[be].receive(i, c.advertise_keys())
    rounds = [Round.SHARE_KEYS, Round.MASKED_INPUT, Round.UNMASKING]
    for rnd in rounds:
        requests = {be: servers[be].broadcast() for be in (NP, TORCH)}
        assert requests[NP] == requests[TORCH]
        for i, msg in requests[NP].items():
            if not alive(i, rnd):
                continue
            outs = {}
            for be in (NP, TORCH):
                c = clients[be][i]
                if rnd is Round.SHARE_KEYS:
                    outs[be] = c.share_keys(msg)
                elif rnd is Round.MASKED_INPUT:
                    outs[be] = c.masked_input(msg, inputs[be][i])
                else:
                    outs[be] = c.unmask(msg)
                servers[be].receive(i, outs[be])
            assert outs[NP] == outs[TORCH], (rnd, i)
    return {be: servers[be].unmask() for be in (NP, TORCH)}


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


def test_quantized_sessions_agree_across_backends() -> None:
    cfg = config(n=5, t=3, d=30)
    x = torch.linspace(-0.9, 0.9, 30)
    host = {i: quantize_input(x, i + 1, cfg, entropy=replay(b"%d" % i))
            for i in range(5)}  # fmt: skip
    dev = {i: from_host(q, "cpu") for i, q in host.items()}
    drop = {0: Round.MASKED_INPUT, 3: Round.UNMASKING}
    a = run_quantized_session(host, cfg, drop=drop, policy=LENIENT)
    b = run_quantized_session(dev, cfg, drop=drop, policy=LENIENT, backend=TORCH)
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


def test_torch_server_rejects_an_oversized_coordinate() -> None:
    cfg = config(n=3, t=2, d=2, ring_bits=30)
    server = SecAggServer(cfg, backend=TORCH)
    payload = (1 << 30).to_bytes(4, "little") * cfg.encoded_length
    data = MaskedInput.frame(0, 30, cfg.encoded_length) + payload
    with pytest.raises(InvalidMessage):
        server._ring.parse(data)


# On CUDA (skipped without it): the Triton mask kernel and device tensors
# end to end, against the numpy path on the host.


@pytest.mark.gpu
def test_cuda_quantize_matches_the_host() -> None:
    d = (1 << 20) + 37  # two rounding blocks and a ragged tail
    cfg = SecAggConfig(num_clients=4, threshold=3, vector_length=d, max_weight=9)
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))  # test data
    host = quantize_input(x, 7, cfg, entropy=replay(b"g"))
    dev = quantize_tensor(x.cuda(), 7, cfg, entropy=replay(b"g"))
    assert dev.values.is_cuda and dev.clipped == host.clipped
    assert np.array_equal(dev.values.cpu().numpy(), host.values.astype(np.int64))


@pytest.mark.gpu
@pytest.mark.parametrize("bits", BITS)
def test_cuda_wire_matches_the_host(bits: int) -> None:
    a = _residues(bits, 1000)
    wire = bytes(ring.to_wire(a, bits))
    t = torch.from_numpy(a.astype(np.int64)).cuda()
    assert bytes(ring.to_wire_t(t, bits)) == wire
    back = ring.from_wire_t(wire, 1000, bits, "cuda")
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
