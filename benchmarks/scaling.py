"""How client time, server time and upload grow with n, d and dropouts.

One axis at a time around a base point, each point one whole secagg session
driven message by message (every message through ``to_bytes``/``from_bytes``):

* clients n = 10 → 500 at d = 100K, no dropout;
* dimension d = 10K → 10M at n = 10, no dropout;
* dropout 0 / 10 % / 30 % at d = 100K for n = 100 and n = 500 (the dropped
  clients vanish after ShareKeys: the server then re-derives every pairwise
  mask they shared with a survivor, the costliest case).

Client time is the mean per client of its own work (keys and shares,
quantise + mask, Unmasking answer); server time is all of the server's work.
The graph is complete; SecAgg+ points are added when ``SecAggConfig`` offers
a sparse graph.  Writes ``results/scaling.json`` and one PNG per axis::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.scaling
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import _ours
from benchmarks._harness import (
    RESULTS_DIR,
    fmt,
    machine_info,
    pin_threads,
    print_table,
    seeded_update,
    write_json,
)


@dataclass(frozen=True)
class Point:
    """One session to run."""

    axis: str
    n: int
    d: int
    dropout: float
    sparse: bool = False  # SecAgg+ (Harary) instead of the complete graph


@dataclass(frozen=True)
class Measurement:
    """What one session cost (seconds) and moved (bytes per client)."""

    axis: str
    graph: str
    degree: int
    threshold: int
    n: int
    d: int
    dropout: float
    dropped: int
    client_wall_s: float
    client_cpu_s: float
    client_keys_cpu_s: float
    client_masking_cpu_s: float
    server_wall_s: float
    server_cpu_s: float
    server_unmask_cpu_s: float
    bytes_per_client: float
    bytes_over_f32: float
    max_abs_err: float


def full_points(sparse: bool) -> list[Point]:
    ns = (10, 50, 100, 200, 500)
    pts = [Point("n", n, 100_000, 0.0) for n in ns]
    pts += [Point("d", 10, d, 0.0) for d in (10_000, 100_000, 1_000_000, 10_000_000)]
    pts += [Point("dropout", n, 100_000, r) for n in (100, 500) for r in (0.1, 0.3)]
    if sparse:
        pts += [Point("n", n, 100_000, 0.0, True) for n in ns]
        pts += [
            Point("dropout", n, 100_000, r, True)
            for n in (100, 500)
            for r in (0.1, 0.3)
        ]
    return pts


def quick_points(sparse: bool) -> list[Point]:
    pts = [Point("n", n, 2_000, 0.0) for n in (4, 8)]
    pts += [Point("d", 4, d, 0.0) for d in (1_000, 5_000)]
    pts += [Point("dropout", 8, 2_000, r) for r in (0.25,)]
    if sparse:
        pts += [Point("n", 12, 2_000, 0.0, True)]
    return pts


def run_point(p: Point) -> Measurement:
    """One session at ``p``, weights 1, seeded inputs.  Complete graph:
    threshold n//2 + 1; SecAgg+: degree and threshold from secagg's finder."""
    params = _ours.sparse_params(p.n, p.dropout) if p.sparse else None
    degree, threshold = params if params is not None else (0, p.n // 2 + 1)
    config = _ours.make_config(p.n, p.d, threshold, degree or None)
    inputs = {i: seeded_update(p.d, i + 1) for i in range(p.n)}
    k = round(p.dropout * p.n)
    dropped = frozenset(random.Random(p.n).sample(range(p.n), k))
    s = _ours.timed_session(config, inputs, dropped)
    alive = [i for i in range(p.n) if i not in dropped]
    exact = np.mean([inputs[i].astype(np.float64) for i in alive], axis=0)
    parts = s.parts
    client = [parts[x] for x in ("client_keys", "client_masking", "client_unmask")]
    server = [parts["server_keys"], parts["server_unmask"]]
    sent = [s.bytes_sent[i] for i in alive]
    per_client = float(np.mean(sent))
    return Measurement(
        axis=p.axis,
        graph="harary" if degree else "complete",
        degree=degree,
        threshold=threshold,
        n=p.n,
        d=p.d,
        dropout=p.dropout,
        dropped=k,
        client_wall_s=sum(t.wall_s for t in client) / p.n,
        client_cpu_s=sum(t.cpu_s for t in client) / p.n,
        client_keys_cpu_s=parts["client_keys"].cpu_s / p.n,
        client_masking_cpu_s=parts["client_masking"].cpu_s / max(len(alive), 1),
        server_wall_s=sum(t.wall_s for t in server),
        server_cpu_s=sum(t.cpu_s for t in server),
        server_unmask_cpu_s=parts["server_unmask"].cpu_s,
        bytes_per_client=per_client,
        bytes_over_f32=per_client / (4 * p.d),
        max_abs_err=float(np.abs(s.mean - exact).max()),
    )


def print_rows(rows: Sequence[Measurement]) -> None:
    headers = [
        "axis", "graph", "n", "d", "dropped", "client CPU s", "client keys CPU s",
        "client mask CPU s", "server CPU s", "server unmask CPU s",
        "server wall s", "bytes/client", "bytes/f32", "max|err|",
    ]  # fmt: skip
    print_table(
        headers,
        [
            [
                m.axis, _graph_label(m), str(m.n), f"{m.d:,}", str(m.dropped),
                fmt(m.client_cpu_s, 4),
                fmt(m.client_keys_cpu_s, 4), fmt(m.client_masking_cpu_s, 4),
                fmt(m.server_cpu_s), fmt(m.server_unmask_cpu_s), fmt(m.server_wall_s),
                f"{m.bytes_per_client:,.0f}", fmt(m.bytes_over_f32, 4),
                f"{m.max_abs_err:.1e}",
            ]
            for m in rows
        ],
    )  # fmt: skip


def _graph_label(m: Measurement) -> str:
    if m.graph == "complete":
        return f"complete t={m.threshold}"
    return f"SecAgg+ k={m.degree} t={m.threshold}"


def plot(rows: Sequence[Measurement], out_dir: Path, stem: str) -> list[Path]:
    """One PNG per axis: client and server CPU seconds, and bytes / float32."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for axis, xlabel in (("n", "clients n"), ("d", "dimension d")):
        if not any(m.axis == axis for m in rows):
            continue
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for graph in ("complete", "harary"):
            sel = [m for m in rows if m.axis == axis and m.graph == graph]
            if not sel:
                continue
            xs = [m.n if axis == "n" else m.d for m in sel]
            tag = "complete" if graph == "complete" else "SecAgg+"
            a1.loglog(xs, [m.client_cpu_s for m in sel], "o-", label=f"client, {tag}")
            a1.loglog(xs, [m.server_cpu_s for m in sel], "s--", label=f"server, {tag}")
            a2.semilogx(xs, [m.bytes_over_f32 for m in sel], "o-", label=tag)
        a1.set(xlabel=xlabel, ylabel="CPU seconds", title=f"time vs {axis}")
        a1.legend()
        a2.set(xlabel=xlabel, ylabel="upload / float32 size", title="upload")
        a2.legend()
        paths.append(_save(fig, out_dir / f"{stem}_{axis}.png"))
        plt.close(fig)
    sel = [m for m in rows if m.axis == "dropout" or (m.axis == "n" and m.d == 100_000)]
    groups = sorted({m.n for m in rows if m.axis == "dropout"})
    if groups:
        fig, ax = plt.subplots(figsize=(6, 4))
        for n in groups:
            pts = sorted((m.dropout, m.server_cpu_s) for m in sel if m.n == n)
            ax.plot(
                [100 * x for x, _ in pts], [y for _, y in pts], "o-", label=f"n={n}"
            )
        ax.set(xlabel="dropped after ShareKeys (%)", ylabel="server CPU seconds",
               title="server time vs dropout (d=100K)")  # fmt: skip
        ax.legend()
        paths.append(_save(fig, out_dir / f"{stem}_dropout.png"))
        plt.close(fig)
    return paths


def _save(fig: object, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    print(f"wrote {path}")
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, < 1 minute")
    p.add_argument("--axis", choices=("n", "d", "dropout"), action="append")
    p.add_argument("--out", type=Path, default=None, help="JSON path")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pin_threads()
    state = _ours.status()
    if state != "ready":
        print(f"secagg unavailable: {state}")
        return 1
    sparse = _ours.has_sparse_graph()
    points = quick_points(sparse) if args.quick else full_points(sparse)
    if args.axis:
        points = [p for p in points if p.axis in args.axis]
    graph = "complete"
    if sparse:
        graph += " and SecAgg+ (Harary; secagg's finder, 10 % corrupt, dropout >= 10 %)"
    else:
        graph += " (SecAgg+ skipped: no sparse-graph option in SecAggConfig)"
    print(f"graph: {graph}")
    payload: dict[str, object] = {"machine_start": machine_info(), "quick": args.quick}
    payload["graph"] = graph
    run_point(Point("warm-up", 4, 1_000, 0.0))  # first-call costs stay out
    rows = []
    for p in points:
        rows.append(run_point(p))
        print_rows(rows[-1:])
    print("\n## All points")
    print_rows(rows)
    payload["rows"] = rows
    payload["machine_end"] = machine_info()
    out = args.out
    if out is None and not args.quick:
        out = RESULTS_DIR / "scaling.json"
    if out is not None:
        payload["plots"] = [str(x) for x in plot(rows, out.parent, out.stem)]
        write_json(out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
