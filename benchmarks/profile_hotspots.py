"""cProfile of the hot spots behind the issue-7 targets that are missed.

* ``client``:  our client masking stage at d = 10M, k = 32 (target: 8× Flower);
* ``session``: one whole secagg session at n = 100, d = 100K (target: ≤ 20 %
  added to a plain round);
* ``dp``:      one DP-SGD client round at d = 1M (no target; for the dp owner).

Each case runs once untimed (warm-up), then once under cProfile; the top
functions by own time are printed.  From the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.profile_hotspots
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _ours
from benchmarks._harness import Thunk, pin_threads, seeded_update


def client_case(quick: bool) -> Callable[[], Thunk]:
    d, k = (20_000, 4) if quick else (10_000_000, 32)
    job = _ours.client_job(d, k, seed=0)
    if isinstance(job, str):
        raise SystemExit(job)
    return job


def session_case(quick: bool) -> Callable[[], Thunk]:
    n, d = (8, 2_000) if quick else (100, 100_000)
    config = _ours.make_config(n, d, n // 2 + 1)
    inputs = {i: seeded_update(d, i + 1) for i in range(n)}
    return lambda: lambda: _ours.timed_session(config, inputs)


def dp_case(quick: bool) -> Callable[[], Thunk]:
    from benchmarks import round_overhead as ro
    from core.interfaces import TrainTask
    from core.params import ParamSpec

    d, examples = (10_000, 64) if quick else (1_000_000, ro.EXAMPLES)
    model = ro.make_model(d)
    data = ro.make_datasets(1, examples)[0]
    ledger = Path(tempfile.mkdtemp(prefix="fedshield-bench-ledger-"))
    _, private = ro.make_trainers(model, [data], 4, ledger)
    if isinstance(private, str):
        raise SystemExit(private)
    start = ParamSpec.from_module(model).flatten(model)
    rounds = iter(range(4))

    def thunk() -> object:
        task = TrainTask(
            round_index=next(rounds), client_id=0, global_params=start, data=data
        )
        return private.train(task)

    return lambda: thunk


CASES = {"client": client_case, "session": session_case, "dp": dp_case}


def profile(name: str, job: Callable[[], Thunk], top: int) -> None:
    job()()  # warm-up
    thunk = job()
    prof = cProfile.Profile()
    prof.enable()
    thunk()
    prof.disable()
    print(f"\n## {name}")
    pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cases", nargs="*", help=f"any of {', '.join(CASES)} (all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes")
    p.add_argument("--top", type=int, default=12, help="functions to print")
    args = p.parse_args(argv)
    unknown = set(args.cases) - set(CASES)
    if unknown:
        p.error(f"unknown cases: {', '.join(sorted(unknown))}")
    pin_threads()
    for name in args.cases or list(CASES):
        profile(name, CASES[name](args.quick), args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
