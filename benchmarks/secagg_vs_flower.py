"""fedshield ``secagg`` against Flower's SecAgg+ on the same CPU.

Same process, same inputs, interleaved runs (ours, Flower, ours, Flower ...),
median of the repeats, CPU time (``time.process_time``) and wall time:

1. one client's masking work (quantise + every mask + apply);
2. the server's unmasking and dequantisation after the masked inputs arrive;
3. bytes uploaded per client against the float32 plaintext.

Run it in ``.venv-bench`` (``make bench-env``), from the repository root::

    OMP_NUM_THREADS=1 .venv-bench/bin/python -m benchmarks.secagg_vs_flower

Without flwr (the main venv) the Flower columns are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import _flower, _limits, _ours
from benchmarks._harness import (
    FLWR_MISSING,
    RESULTS_DIR,
    Job,
    Measured,
    Summary,
    Thunk,
    fmt,
    interleave,
    machine_info,
    pin_threads,
    print_table,
    ratio,
    write_json,
)

OURS, FLOWER = "ours", "flower"


@dataclass(frozen=True)
class Graph:
    """Complete graph (``k is None``) or a SecAgg+ graph of ``k`` neighbours."""

    k: int | None

    def label(self) -> str:
        return "complete" if self.k is None else f"k={self.k}"

    def num_shares(self, n: int) -> int:
        """Flower's ``num_shares``: a client plus its neighbours."""
        return n if self.k is None else self.k + 1

    def threshold(self, n: int) -> int:
        """Honest-majority threshold over the neighbourhood, used on both sides."""
        return self.num_shares(n) // 2 + 1


@dataclass(frozen=True)
class Plan:
    """What to measure."""

    client_dims: tuple[int, ...]
    client_ks: tuple[int, ...]
    server_n: int
    server_d: int
    server_drops: tuple[int, ...]
    server_graphs: tuple[Graph, ...]
    bytes_cases: tuple[tuple[int, int, Graph], ...]  # (n, d, graph)
    repeats: int


FULL = Plan(
    client_dims=(1_000_000, 10_000_000),
    client_ks=(8, 32),
    server_n=32,
    server_d=1_000_000,
    server_drops=(0, 3),
    server_graphs=(Graph(None), Graph(8)),
    bytes_cases=(
        (100, 1_000_000, Graph(None)),
        (100, 1_000_000, Graph(8)),
        (32, 1_000_000, Graph(None)),
    ),
    repeats=5,
)
QUICK = Plan(
    client_dims=(20_000,),
    client_ks=(4,),
    server_n=8,
    server_d=20_000,
    server_drops=(0, 2),
    server_graphs=(Graph(None), Graph(4)),
    bytes_cases=((10, 20_000, Graph(None)),),
    repeats=3,
)


@dataclass(frozen=True)
class TimedRow:
    """One configuration timed on both sides; ``None`` where not measured."""

    case: str
    ours: Summary | None
    flower: Summary | None
    ours_over_flower_cpu: float | None
    ours_over_flower_wall: float | None
    note: str


def timed_row(
    case: str, ours: Summary | None, flower: Summary | None, note: str
) -> TimedRow:
    """A row with its ratios computed from the two medians."""
    cpu = wall = None
    if ours is not None and flower is not None:
        cpu, wall = ratio(ours.cpu_s, flower.cpu_s), ratio(ours.wall_s, flower.wall_s)
    return TimedRow(case, ours, flower, cpu, wall, note)


@dataclass(frozen=True)
class BytesRow:
    """Bytes one client uploads in a whole session, and the float32 size."""

    n: int
    d: int
    graph: str
    plaintext_f32: int
    ours: int | None
    flower: int | None
    flower_stages: _flower.UploadBytes | None
    note: str


def _constant_job(thunk: Thunk) -> Job:
    """A job whose state is reusable: no per-run preparation."""
    return lambda: thunk


def _max_err(result: object, expected: np.ndarray[Any, Any]) -> float:
    """Largest absolute difference of a returned mean from the exact one."""
    return float(np.abs(np.asarray(result, dtype=np.float64) - expected).max())


def _summary(results: dict[str, Measured], name: str) -> Summary | None:
    return results[name].summary if name in results else None


def client_rows(fl: Any | None, plan: Plan) -> list[TimedRow]:
    """One client's masking work, ours and Flower's interleaved."""
    rows = []
    for d in plan.client_dims:
        for k in plan.client_ks:
            jobs: dict[str, Job] = {}
            notes = []
            ours_job = _ours.client_job(d, k, seed=d + k)
            if isinstance(ours_job, str):
                notes.append(ours_job)
            else:
                jobs[OURS] = ours_job
            if fl is None:
                notes.append(FLWR_MISSING)
            else:
                thunk = _flower.client_job(fl, d, k, seed=d + k)
                jobs[FLOWER] = _constant_job(thunk)
            res = interleave(jobs, plan.repeats)
            row = timed_row(
                f"client d={d:,} k={k}",
                _summary(res, OURS),
                _summary(res, FLOWER),
                "; ".join(notes),
            )
            rows.append(row)
            print_timed([row])
    return rows


def server_rows(fl: Any | None, plan: Plan) -> list[TimedRow]:
    """Server unmasking + dequantisation, ours and Flower's interleaved."""
    rows = []
    n, d = plan.server_n, plan.server_d
    for graph in plan.server_graphs:
        for dropped in plan.server_drops:
            jobs: dict[str, Job] = {}
            notes: list[str] = []
            t = graph.threshold(n)
            ours_job = _ours.server_job(n, d, graph.k, t, dropped, seed=n + dropped)
            if isinstance(ours_job, str):
                notes.append(ours_job)
            else:
                jobs[OURS] = ours_job
            case = None
            if fl is None:
                notes.append(FLWR_MISSING)
            else:
                case = _flower.build_server_case(
                    fl, n, d, graph.num_shares(n), t, dropped, seed=n + dropped
                )
                jobs[FLOWER] = _constant_job(partial(_flower.unmask, fl, case))
            res = interleave(jobs, plan.repeats, warmup=0)
            if case is not None:
                err = _max_err(res[FLOWER].last_result, case.expected_mean)
                notes.append(f"flower max|err|={err:.1e}")
            if OURS in res:
                notes.append(_ours.describe_server_result(res[OURS].last_result))
            row = timed_row(
                f"server n={n} d={d:,} {graph.label()} dropped={dropped} t={t}",
                _summary(res, OURS),
                _summary(res, FLOWER),
                "; ".join(notes),
            )
            rows.append(row)
            print_timed([row])
    return rows


def bytes_rows(fl: Any | None, plan: Plan) -> list[BytesRow]:
    """Upload per client: ours from run_session, Flower from its wire types."""
    rows = []
    for n, d, graph in plan.bytes_cases:
        t = graph.threshold(n)
        ours = _ours.upload_bytes(n, d, graph.k, t)
        stages = None
        notes = []
        if isinstance(ours, str):
            notes.append(ours)
        if fl is None:
            notes.append(FLWR_MISSING)
        else:
            stages = _flower.upload_bytes(fl, d, graph.num_shares(n), t)
        rows.append(
            BytesRow(
                n=n,
                d=d,
                graph=graph.label(),
                plaintext_f32=4 * d,
                ours=None if isinstance(ours, str) else ours,
                flower=None if stages is None else stages.total,
                flower_stages=stages,
                note="; ".join(notes),
            )
        )
    print_bytes(rows)
    return rows


def print_timed(rows: Sequence[TimedRow]) -> None:
    """Timing rows: medians, the ours/Flower ratio and the speed-up."""
    headers = [
        "case", "ours CPU s", "Flower CPU s", "ours/Flower CPU", "speed-up CPU",
        "ours wall s", "Flower wall s", "speed-up wall", "note",
    ]  # fmt: skip
    table = []
    for r in rows:
        rc, rw = r.ours_over_flower_cpu, r.ours_over_flower_wall
        table.append(
            [
                r.case,
                fmt(r.ours.cpu_s if r.ours else None),
                fmt(r.flower.cpu_s if r.flower else None),
                fmt(rc),
                fmt(1 / rc if rc else None, 1) + ("x" if rc else ""),
                fmt(r.ours.wall_s if r.ours else None),
                fmt(r.flower.wall_s if r.flower else None),
                fmt(1 / rw if rw else None, 1) + ("x" if rw else ""),
                r.note,
            ]
        )
    print_table(headers, table)


def print_bytes(rows: Sequence[BytesRow]) -> None:
    """Upload rows: bytes, ratio to float32 plaintext and ours/Flower."""
    headers = [
        "n", "d", "graph", "float32 bytes", "ours bytes", "ours/plain",
        "Flower bytes", "Flower/plain", "ours/Flower", "note",
    ]  # fmt: skip
    table = []
    for r in rows:
        table.append(
            [
                str(r.n),
                f"{r.d:,}",
                r.graph,
                f"{r.plaintext_f32:,}",
                "-" if r.ours is None else f"{r.ours:,}",
                fmt(None if r.ours is None else r.ours / r.plaintext_f32, 4),
                "-" if r.flower is None else f"{r.flower:,}",
                fmt(None if r.flower is None else r.flower / r.plaintext_f32, 4),
                fmt(None if r.ours is None or r.flower is None
                    else r.ours / r.flower, 3),
                r.note,
            ]
        )  # fmt: skip
    print_table(headers, table)


def _summary_from(raw: object) -> Summary | None:
    return Summary(**raw) if isinstance(raw, dict) else None


def render(payload: Mapping[str, Any]) -> None:
    """All rows of a run (live payload or reloaded JSON) as three tables."""
    print("\n## Summary")
    for key in ("client", "server"):
        rows = [
            r
            if isinstance(r, TimedRow)
            else timed_row(
                r["case"], _summary_from(r["ours"]), _summary_from(r["flower"]),
                r["note"],
            )
            for r in payload.get(key, [])
        ]  # fmt: skip
        if rows:
            print_timed(rows)
            print()
    if payload.get("limits"):
        print_limits(
            [r if isinstance(r, _limits.Rate) else _limits.Rate(**r)
             for r in payload["limits"]]
        )  # fmt: skip
        print()
    brows = [
        r if isinstance(r, BytesRow) else BytesRow(**{**r, "flower_stages": None})
        for r in payload.get("bytes", [])
    ]
    if brows:
        print_bytes(brows)


def print_limits(rates: Sequence[_limits.Rate]) -> None:
    """Throughput of the primitives a mask is made of."""
    rows = [[r.name, fmt(r.cpu_s, 4), f"{r.words_per_s / 1e6:,.0f}"] for r in rates]
    print_table(["primitive", "CPU s", "M words / CPU s"], rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, < 1 minute")
    p.add_argument("--render", type=Path, help="print the tables of a JSON result")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per side")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default results/secagg_vs_flower.json; quick: none)",
    )
    p.add_argument(
        "--only",
        choices=("limits", "client", "server", "bytes"),
        action="append",
        help="run only these parts (repeatable)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        render(json.loads(args.render.read_text()))
        return 0
    plan = QUICK if args.quick else FULL
    if args.repeats is not None:
        plan = Plan(**{**plan.__dict__, "repeats": args.repeats})
    pin_threads()
    fl = _flower.load_flower()
    print(f"flwr: {'loaded' if fl is not None else FLWR_MISSING}")
    print(f"ours: {_ours.status()}")
    parts = set(args.only or ("limits", "client", "server", "bytes"))
    payload: dict[str, object] = {
        "machine_start": machine_info(),
        "plan": plan,
        "quick": args.quick,
    }
    if "client" in parts:
        print("\n## One client's masking work (median of", plan.repeats, "runs)")
        payload["client"] = client_rows(fl, plan)
    if "server" in parts:
        print("\n## Server unmasking + dequantisation (median of", plan.repeats, ")")
        payload["server"] = server_rows(fl, plan)
    if "bytes" in parts:
        print("\n## Bytes uploaded per client, whole session")
        payload["bytes"] = bytes_rows(fl, plan)
    if "limits" in parts:
        words = max(plan.client_dims)
        print(f"\n## Building blocks, one core, {words:,} words (median)")
        payload["limits"] = limits = _limits.measure_rates(fl, words, plan.repeats)
        print_limits(limits)
    payload["machine_end"] = machine_info()
    render(payload)
    out = args.out
    if out is None and not args.quick:
        out = RESULTS_DIR / "secagg_vs_flower.json"
    if out is not None:
        write_json(out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
