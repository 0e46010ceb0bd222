"""Mask-PRG throughput and server unmasking time, against the copy bandwidth.

Measures the torch back end's mask kernel, as :func:`secagg.backend.mask_sum_for`
chooses it (the fused Triton kernel on CUDA when importable, eager torch ops
otherwise), in Z_2^32:

* client masking: the signed sum of k neighbours' ChaCha20 masks over d
  parameters, as keystream GB/s (4·k·d bytes / s) and masked parameters / s;
* server unmasking (Bonawitz et al.'s headline setting): n = 500 clients,
  d = 100K, 30 % dropped after ShareKeys, complete graph. For each dropped
  client the server regenerates its pair masks with all ~350 surviving
  neighbours in one kernel call and adds them to the aggregate.
  Only the PRG work is timed; key agreement and Shamir reconstruction belong
  to the protocol and are excluded. Keys are random 32-byte strings.
* the device's copy bandwidth (a large ``Tensor.copy_``, 2 × size bytes moved
  per copy) as the memory-bound yardstick.

Where a full run would take minutes (eager torch on CPU), the unmasking is
timed on a few dropped clients and scaled linearly; the JSON says so.

Usage: ``python benchmarks/secagg_gpu.py --device {cpu,cuda} [--quick]``.
Writes ``benchmarks/results/secagg_gpu_<device>.json`` and prints a table.
Only the mask PRG modules are used, so it runs without the protocol code.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from secagg.backend import mask_sum_for
from secagg.prg_torch import signed_mask_sum
from secagg.ring_torch import MaskSum

__all__ = ["BenchConfig", "main", "run"]

BITS = 32
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one benchmark run."""

    device: str
    mask_params: int
    neighbour_counts: tuple[int, ...]
    n_clients: int = 500
    unmask_params: int = 100_000
    dropout: float = 0.30
    unmask_timed_clients: int | None = None  # None: every dropped client
    eager_params: int = 0  # >0: also time the eager path on CUDA at this size
    copy_bytes: int = 1 << 30
    repeats: int = 3


@dataclass
class Results:
    """Everything the JSON file records."""

    config: dict[str, Any]
    environment: dict[str, Any]
    copy_gbps: float = 0.0
    pyca_keystream_gbps: float | None = None  # the CPU back end, one core
    masking: list[dict[str, Any]] = field(default_factory=list)
    unmasking: dict[str, Any] = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up: Triton compile, allocator, caches
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _keys(count: int, rng: random.Random) -> list[bytes]:
    return [rng.randbytes(32) for _ in range(count)]


def _backend(kernel: MaskSum) -> str:
    return "torch-eager" if kernel is signed_mask_sum else "triton"


def copy_bandwidth(device: torch.device, n_bytes: int, repeats: int) -> float:
    """GB/s of a large device-to-device ``copy_`` (read + write counted)."""
    src = torch.ones(n_bytes // 8, dtype=torch.int64, device=device)
    dst = torch.empty_like(src)
    t = _best_time(lambda: dst.copy_(src), device, repeats)
    return 2 * src.numel() * 8 / t / 1e9


def time_masking(
    device: torch.device,
    d: int,
    k: int,
    repeats: int,
    rng: random.Random,
    kernel: MaskSum,
) -> dict[str, Any]:
    """One client's signed sum of k pair masks over d parameters."""
    keys = _keys(k, rng)
    signs = [rng.choice((1, -1)) for _ in range(k)]
    out = torch.empty(d, dtype=torch.int64, device=device)
    t = _best_time(
        lambda: kernel(keys, signs, d, BITS, device, out=out), device, repeats
    )
    return {
        "backend": _backend(kernel),
        "neighbours": k,
        "params": d,
        "seconds": t,
        "keystream_gbps": 4 * k * d / t / 1e9,
        "params_per_s": d / t,
    }


def time_unmasking(
    cfg: BenchConfig, device: torch.device, rng: random.Random
) -> dict[str, Any]:
    """Server regeneration of every dropped client's pair masks (complete graph)."""
    n, d = cfg.n_clients, cfg.unmask_params
    dropped = sorted(rng.sample(range(n), round(cfg.dropout * n)))
    dead = set(dropped)
    survivors = [v for v in range(n) if v not in dead]
    timed = (
        dropped
        if cfg.unmask_timed_clients is None
        else dropped[: cfg.unmask_timed_clients]
    )
    # Pair keys stand in for HKDF(KA(s_u, s_v)); the sign follows id order.
    work = [
        (_keys(len(survivors), rng), [1 if u < v else -1 for v in survivors])
        for u in timed
    ]
    aggregate = torch.zeros(d, dtype=torch.int64, device=device)
    scratch = torch.empty(d, dtype=torch.int64, device=device)
    mask = (1 << BITS) - 1
    kernel = mask_sum_for(device)

    def unmask() -> None:
        for keys, signs in work:
            kernel(keys, signs, d, BITS, device, out=scratch)
            aggregate.sub_(scratch).bitwise_and_(mask)

    # One warm-up client only: a full warm-up pass would double a long CPU run.
    kernel(work[0][0][:1], work[0][1][:1], d, BITS, device, out=scratch)
    _sync(device)
    t0 = time.perf_counter()
    unmask()
    _sync(device)
    elapsed = time.perf_counter() - t0
    scale = len(dropped) / len(timed)
    keystream = 4 * d * len(survivors) * len(dropped)
    return {
        "backend": _backend(kernel),
        "clients": n,
        "params": d,
        "dropped": len(dropped),
        "surviving_neighbours": len(survivors),
        "timed_dropped_clients": len(timed),
        "extrapolated": scale != 1.0,
        "seconds": elapsed * scale,
        "keystream_bytes": keystream,
        "keystream_gbps": keystream / (elapsed * scale) / 1e9,
    }


def pyca_keystream(n_bytes: int, repeats: int) -> float:
    """GB/s of pyca's (OpenSSL) ChaCha20 keystream, the CPU masking back end."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    zeros = bytes(n_bytes)
    cipher = Cipher(algorithms.ChaCha20(bytes(32), bytes(16)), mode=None)
    t = _best_time(
        lambda: cipher.encryptor().update(zeros), torch.device("cpu"), repeats
    )
    return n_bytes / t / 1e9


def _environment(device: torch.device) -> dict[str, Any]:
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine())
    )
    try:
        triton_version: str | None = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton_version = None
    return {
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "triton": triton_version,
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def run(cfg: BenchConfig) -> Results:
    """Run every measurement of ``cfg`` and return the results."""
    device = torch.device(cfg.device)
    rng = random.Random(0)  # benchmark inputs only: never key material
    res = Results(config=asdict(cfg), environment=_environment(device))
    res.copy_gbps = copy_bandwidth(device, cfg.copy_bytes, cfg.repeats)
    if device.type == "cpu":
        res.pyca_keystream_gbps = pyca_keystream(4 * cfg.mask_params, cfg.repeats)
    kernel = mask_sum_for(device)
    for k in cfg.neighbour_counts:
        res.masking.append(
            time_masking(device, cfg.mask_params, k, cfg.repeats, rng, kernel)
        )
    if cfg.eager_params and kernel is not signed_mask_sum:
        # The eager torch path, the kernel on CUDA machines without Triton.
        for k in cfg.neighbour_counts:
            res.masking.append(
                time_masking(device, cfg.eager_params, k, 1, rng, signed_mask_sum)
            )
    res.unmasking = time_unmasking(cfg, device, rng)
    return res


def _table(res: Results) -> str:
    env = res.environment
    lines = [
        f"device: {env['device']} ({env['device_name']}), torch {env['torch']}, "
        f"triton {env['triton']}",
        f"copy bandwidth (Tensor.copy_, read+write): {res.copy_gbps:,.1f} GB/s",
    ]
    if res.pyca_keystream_gbps is not None:
        lines.append(
            f"pyca ChaCha20 keystream (CPU back end, 1 core): "
            f"{res.pyca_keystream_gbps:,.3f} GB/s"
        )
    lines += [
        "",
        f"{'masking':<12} {'k':>5} {'params':>11} {'seconds':>10} "
        f"{'keystream GB/s':>15} {'% of copy':>10} {'params/s':>12}",
    ]
    for m in res.masking:
        pct = 100 * m["keystream_gbps"] / res.copy_gbps
        lines.append(
            f"{m['backend']:<12} {m['neighbours']:>5} {m['params']:>11,} "
            f"{m['seconds']:>10.4f} {m['keystream_gbps']:>15.3f} {pct:>9.1f}% "
            f"{m['params_per_s']:>12.3e}"
        )
    u = res.unmasking
    note = (
        f" (timed {u['timed_dropped_clients']} of {u['dropped']}, scaled)"
        if u["extrapolated"]
        else ""
    )
    lines += [
        "",
        f"server unmasking [{u['backend']}]: n={u['clients']}, d={u['params']:,}, "
        f"{u['dropped']} dropped x {u['surviving_neighbours']} surviving neighbours: "
        f"{u['seconds']:.3f} s{note}, {u['keystream_bytes'] / 1e9:.1f} GB keystream "
        f"at {u['keystream_gbps']:.3f} GB/s",
    ]
    return "\n".join(lines)


def _config(device: str, quick: bool) -> BenchConfig:
    if quick:
        return BenchConfig(
            device=device,
            mask_params=4096,
            neighbour_counts=(1, 8),
            n_clients=20,
            unmask_params=2048,
            copy_bytes=1 << 24,
            repeats=2,
        )
    if device == "cuda":
        return BenchConfig(
            device=device,
            mask_params=10_000_000,
            neighbour_counts=(1, 16, 100),
            eager_params=1_000_000,
        )
    # Eager torch on CPU runs at tens of MB/s: time 2 dropped clients and scale.
    return BenchConfig(
        device=device,
        mask_params=100_000,
        neighbour_counts=(1, 16),
        unmask_timed_clients=2,
        repeats=2,
        copy_bytes=1 << 28,
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    cfg = _config(args.device, args.quick)
    res = run(cfg)
    print(_table(res))
    out = args.out or RESULTS / f"secagg_gpu_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = asdict(res) | {"quick": args.quick}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
