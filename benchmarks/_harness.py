"""Shared measurement helpers for the benchmark scripts.

Every number a script prints comes from :func:`interleave` (timings) or from a
byte count taken off a real serialised message.  Nothing here is secret:
benchmark inputs come from a seeded numpy generator so runs are repeatable.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FLWR_MISSING = "flwr not installed (run `make bench-env`, use .venv-bench)"


@dataclass(frozen=True)
class Timing:
    """One measurement: CPU time of this process and wall time, in seconds."""

    cpu_s: float
    wall_s: float


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated :class:`Timing` measurements."""

    cpu_s: float
    wall_s: float
    cpu_min_s: float
    cpu_max_s: float
    repeats: int


Thunk = Callable[[], object]
"""The timed work: one call is one measurement."""
Job = Callable[[], Thunk]
"""Untimed preparation (fresh single-use state, say) returning the timed work."""


@dataclass(frozen=True)
class SelfTimed:
    """What a thunk returns when it times only part of its own work.

    Used where the timed party's steps are interleaved with another party's
    (the server waits for the clients' replies): only the windows the thunk
    measured with a :class:`Stopwatch` count.
    """

    timing: Timing
    result: object


class Stopwatch:
    """Accumulates CPU and wall time over several start/stop windows."""

    def __init__(self) -> None:
        self._cpu = 0.0
        self._wall = 0.0
        self._c0: float | None = None
        self._w0 = 0.0

    def start(self) -> None:
        self._c0, self._w0 = time.process_time(), time.perf_counter()

    def stop(self) -> None:
        if self._c0 is None:
            raise RuntimeError("Stopwatch.stop() without start()")
        self._cpu += time.process_time() - self._c0
        self._wall += time.perf_counter() - self._w0
        self._c0 = None

    def add(self, timing: Timing) -> None:
        """Count time measured elsewhere."""
        self._cpu += timing.cpu_s
        self._wall += timing.wall_s

    def timing(self) -> Timing:
        return Timing(cpu_s=self._cpu, wall_s=self._wall)


def measure(thunk: Thunk) -> tuple[Timing, object]:
    """Time one call of ``thunk`` (CPU via ``process_time``, and wall time)."""
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    result = thunk()
    c1, w1 = time.process_time(), time.perf_counter()
    if isinstance(result, SelfTimed):
        return result.timing, result.result
    return Timing(cpu_s=c1 - c0, wall_s=w1 - w0), result


@dataclass(frozen=True)
class Measured:
    """A job's summary and what its last timed call returned (for checks)."""

    summary: Summary
    last_result: object


def interleave(
    jobs: Mapping[str, Job], repeats: int, warmup: int = 1
) -> dict[str, Measured]:
    """Run every job in turn (A, B, A, B, ...) and summarise each by median.

    Interleaving spreads the load of other tenants of a shared machine evenly
    over the contenders, which is what makes their ratio meaningful.  Each
    job's preparation runs before its timed call and is not timed.
    """
    for _ in range(warmup):
        for job in jobs.values():
            job()()
    samples: dict[str, list[Timing]] = {name: [] for name in jobs}
    last: dict[str, object] = {}
    for _ in range(repeats):
        for name, job in jobs.items():
            thunk = job()
            timing, last[name] = measure(thunk)
            samples[name].append(timing)
    return {name: Measured(summarise(ts), last[name]) for name, ts in samples.items()}


def summarise(timings: Sequence[Timing]) -> Summary:
    """Median CPU and wall time of a non-empty list of timings."""
    cpu = [t.cpu_s for t in timings]
    return Summary(
        cpu_s=statistics.median(cpu),
        wall_s=statistics.median(t.wall_s for t in timings),
        cpu_min_s=min(cpu),
        cpu_max_s=max(cpu),
        repeats=len(timings),
    )


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs, or NaN when the denominator is not positive."""
    return ours / theirs if theirs > 0 else float("nan")


def seeded_update(d: int, seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A float32 model update of length ``d`` (benchmark input, not secret)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(d, dtype=np.float32) * np.float32(0.05)


def flwr_version() -> str | None:
    """The installed flwr version, or ``None`` when flwr is not importable."""
    try:
        import flwr
    except ImportError:
        return None
    return str(flwr.__version__)


def machine_info() -> dict[str, object]:
    """What the numbers were measured on, including the load at that moment."""
    import cryptography
    import torch

    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "loadavg_1_5_15": list(os.getloadavg()),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cryptography": cryptography.__version__,
        "flwr": flwr_version(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "git": _git_state(),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _git_state() -> dict[str, object]:
    """HEAD and which measured packages had uncommitted changes at run time."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, check=False
            )
        except OSError:
            return ""
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--", "secagg", "core", "dp")
    return {"head": git("rev-parse", "HEAD"), "uncommitted": dirty.splitlines()}


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def pin_threads() -> None:
    """One compute thread for torch, as for numpy under OMP_NUM_THREADS=1."""
    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(max(threads, 1))


def to_jsonable(obj: object) -> object:
    """Dataclasses, tuples and floats made JSON-safe (NaN becomes null)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def write_json(path: Path, payload: Mapping[str, object]) -> None:
    """Write ``payload`` as indented JSON, creating the folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(payload), indent=2) + "\n")
    print(f"wrote {path}")


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table cell; '-' when not measured."""
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A GitHub-flavoured markdown table on stdout."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()
