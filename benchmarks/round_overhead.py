"""What secure aggregation and DP each add to one plain FedAvg round.

One round, simulated in one process (clients run one after another, so a
round's wall time is the sum of every party's work), four ways:

* ``plain``          core.LocalTrainer + core.aggregation.weighted_mean;
* ``plain+dp``       core.dp_trainer.DPTrainer (Opacus DP-SGD) + weighted_mean;
* ``secagg``         LocalTrainer + a secagg session over the deltas;
* ``secagg+dp``      DPTrainer + a secagg session;
* ``secagg+``        LocalTrainer + SecAgg+ (Harary graph, degree and
                     threshold from secagg's finder for 10 % corrupt and 10 %
                     dropout), where secagg offers it and the degree < n - 1.

Phases: local training, key agreement and sharing (AdvertiseKeys and
ShareKeys, clients and server), masking (quantise + mask, every client),
unmasking (the survivors' share answers, and the server folding the masked
inputs, reconstructing and removing masks, decoding), plain aggregation.
The secagg session is driven message by message through ``secagg``'s public
classes so that each phase is timed alone.

Workload: an MLP 784-h-10 with h chosen so the model has about d parameters;
every client holds 600 synthetic examples (MNIST split over 100 clients) and
trains one epoch, batch 32, SGD lr 0.05.  Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.round_overhead
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn

from benchmarks import _ours
from benchmarks._harness import (
    RESULTS_DIR,
    Stopwatch,
    Timing,
    fmt,
    machine_info,
    pin_threads,
    print_table,
    write_json,
)

PHASES = ("training", "keys_and_shares", "masking", "unmasking", "plain_aggregation")
VARIANTS = ("plain", "plain+dp", "secagg", "secagg+dp", "secagg+")
PART_TO_PHASE = {
    "client_keys": "keys_and_shares",
    "server_keys": "keys_and_shares",
    "client_masking": "masking",
    "client_unmask": "unmasking",
    "server_unmask": "unmasking",
}
EXAMPLES, FEATURES, CLASSES, BATCH, LR = 600, 784, 10, 32, 0.05


@dataclass(frozen=True)
class Plan:
    """What to measure."""

    clients: tuple[int, ...]
    dims: tuple[int, ...]
    repeats: int
    examples: int
    dp_max_nd: int  # DP variants only where n·d is at most this


FULL = Plan(
    clients=(10, 100),
    dims=(100_000, 1_000_000),
    repeats=3,
    examples=EXAMPLES,
    dp_max_nd=10_000_000,
)
QUICK = Plan(clients=(4,), dims=(10_000,), repeats=1, examples=64, dp_max_nd=10**9)


@dataclass(frozen=True)
class VariantResult:
    """Median seconds per phase (wall and CPU) of one variant's rounds."""

    variant: str
    wall_s: Mapping[str, float]
    cpu_s: Mapping[str, float]
    total_wall_s: float
    total_cpu_s: float
    max_abs_err: float | None


@dataclass(frozen=True)
class ConfigResult:
    """All four variants at one (n, d), with overheads against ``plain``."""

    n: int
    d: int
    params: int
    variants: tuple[VariantResult, ...]
    secagg_overhead: float
    dp_overhead: float
    both_overhead: float
    note: str


# ------------------------------------------------------------------ workload


def hidden_for(d: int) -> int:
    """h such that 784·h + h + 10·h + 10 is the closest to d."""
    return max(1, round((d - CLASSES) / (FEATURES + 1 + CLASSES)))


def make_model(d: int) -> nn.Module:
    torch.manual_seed(0)  # initial weights: benchmark input, not secret
    h = hidden_for(d)
    return nn.Sequential(nn.Linear(FEATURES, h), nn.ReLU(), nn.Linear(h, CLASSES))


def make_datasets(n: int, examples: int) -> list[Any]:
    """Seeded synthetic client data, labelled by a fixed random linear teacher."""
    from core.interfaces import ClientDataset

    rng = np.random.default_rng(7)
    teacher = rng.standard_normal((FEATURES, CLASSES)).astype(np.float32)
    out = []
    for cid in range(n):
        x = rng.standard_normal((examples, FEATURES), dtype=np.float32)
        y = np.argmax(x @ teacher, axis=1)
        out.append(
            ClientDataset(
                client_id=cid,
                features=torch.from_numpy(x),
                labels=torch.from_numpy(y.astype(np.int64)),
            )
        )
    return out


def make_trainers(
    model: nn.Module, datasets: Sequence[Any], rounds: int, ledger_dir: Path
) -> tuple[Any, Any | str]:
    """The plain trainer, and the DP trainer (or why it is unavailable)."""
    from core.config import LocalTrainingConfig
    from core.trainer import LocalTrainer

    plain = LocalTrainer(
        model, config=LocalTrainingConfig(batch_size=BATCH, learning_rate=LR)
    )
    try:
        import dp
        from core.dp_trainer import DPTrainer, prepare_dp_model
    except ImportError as exc:
        return plain, f"DP variants skipped: {exc}"
    config = dp.DPConfig(
        delta=1e-5,
        max_grad_norm=1.0,
        epsilon_budget=1e9,  # never decline: this measures cost, not privacy
        planned_rounds=rounds,
        batch_size=BATCH,
        noise_multiplier=1.0,
    )
    private = DPTrainer(
        prepare_dp_model(model),
        clients=datasets,
        config=config,
        ledger_dir=ledger_dir,
        learning_rate=LR,
    )
    return plain, private


# ------------------------------------------------------------------ one round


Phases = dict[str, Stopwatch]


def train_all(
    trainer: Any, datasets: Sequence[Any], params: torch.Tensor, rnd: int, w: Phases
) -> list[torch.Tensor]:
    """Every client's local training; returns the deltas."""
    from core.interfaces import ClientUpdate, TrainTask

    deltas = []
    for data in datasets:
        task = TrainTask(
            round_index=rnd, client_id=data.client_id, global_params=params, data=data
        )
        w["training"].start()
        outcome = trainer.train(task)
        w["training"].stop()
        if not isinstance(outcome, ClientUpdate):
            raise RuntimeError(f"client {data.client_id} declined: {outcome}")
        deltas.append(outcome.delta)
    # A DP client prepares its next round (noise, ε projection) on a
    # background thread.  In one process that work is this round's too, and
    # it must not spill into the timing of the variant measured next.
    w["training"].start()
    for client in getattr(trainer, "clients", {}).values():
        client.wait_for_prefetched_noise()
    w["training"].stop()
    return deltas


def plain_aggregate(deltas: Sequence[torch.Tensor], w: Phases) -> torch.Tensor:
    from core.aggregation import weighted_mean

    w["plain_aggregation"].start()
    mean = weighted_mean(deltas, [1.0] * len(deltas))
    w["plain_aggregation"].stop()
    return mean


def secure_aggregate(
    deltas: Sequence[torch.Tensor], w: Phases, sparse: bool
) -> torch.Tensor:
    """One secagg session over the deltas, each party and phase timed alone.

    Every client holds the same number of examples, so weights are 1 and the
    mean equals FedAvg's example-weighted mean.
    """
    n, d = len(deltas), int(deltas[0].numel())
    params = _ours.sparse_params(n) if sparse else None
    if params is None:
        config = _ours.make_config(n, d, n // 2 + 1)
    else:
        config = _ours.make_config(n, d, params[1], params[0])
    session = _ours.timed_session(config, dict(enumerate(deltas)))
    for part, phase in PART_TO_PHASE.items():
        w[phase].add(session.parts[part])
    return torch.from_numpy(session.mean).to(torch.float32)


def one_round(
    variant: str, trainers: Mapping[str, Any], datasets: Sequence[Any],
    params: torch.Tensor, rnd: int,
) -> tuple[Phases, float | None]:  # fmt: skip
    """Run one round of ``variant``; return its stopwatches and the secure
    mean's largest deviation from the plain mean of the same deltas."""
    w = {p: Stopwatch() for p in PHASES}
    trainer = trainers["dp" if variant.endswith("+dp") else "plain"]
    deltas = train_all(trainer, datasets, params, rnd, w)
    if variant.startswith("plain"):
        plain_aggregate(deltas, w)
        return w, None
    mean = secure_aggregate(deltas, w, sparse=variant == "secagg+")
    from core.aggregation import weighted_mean

    exact = weighted_mean(deltas, [1.0] * len(deltas))
    return w, float((mean - exact).abs().max())


# ------------------------------------------------------------------ driver


def _median_phases(runs: Sequence[Phases]) -> tuple[dict[str, float], ...]:
    timings = [{p: sw.timing() for p, sw in run.items()} for run in runs]

    def med(get: Callable[[Timing], float]) -> dict[str, float]:
        return {p: statistics.median(get(t[p]) for t in timings) for p in PHASES}

    return med(lambda t: t.wall_s), med(lambda t: t.cpu_s)


def _total(runs: Sequence[Phases], get: Callable[[Timing], float]) -> float:
    return statistics.median(
        sum(get(sw.timing()) for sw in run.values()) for run in runs
    )


def measure_config(n: int, d: int, plan: Plan) -> ConfigResult:
    """Interleave the four variants ``plan.repeats`` times at (n, d)."""
    model = make_model(d)
    params = sum(p.numel() for p in model.parameters())
    datasets = make_datasets(n, plan.examples)
    with tempfile.TemporaryDirectory() as ledger_dir:
        plain, private = make_trainers(
            model, datasets, len(VARIANTS) * (plan.repeats + 1), Path(ledger_dir)
        )
        note = private if isinstance(private, str) else ""
        if not note and n * d > plan.dp_max_nd:
            note = (
                f"DP variants skipped: n·d > {plan.dp_max_nd:,} (DP-SGD costs "
                "seconds per client at d=1M; see the n=10 rows)"
            )
        variants = [v for v in VARIANTS if not (note and v.endswith("+dp"))]
        sparse = _ours.sparse_params(n)
        if sparse is None:
            variants.remove("secagg+")
        else:
            note += f"{'; ' if note else ''}secagg+ degree {sparse[0]}, t={sparse[1]}"
        trainers = {"plain": plain, "dp": private}
        from core.params import ParamSpec

        start = ParamSpec.from_module(model).flatten(model)
        runs: dict[str, list[Phases]] = {v: [] for v in variants}
        errs: dict[str, list[float]] = {v: [] for v in variants}
        rnd = 0
        for v in variants:  # warm every code path up on two clients
            one_round(v, trainers, datasets[:2], start, rnd)
            rnd += 1
        for _ in range(plan.repeats):
            for v in variants:
                w, err = one_round(v, trainers, datasets, start, rnd)
                rnd += 1
                runs[v].append(w)
                if err is not None:
                    errs[v].append(err)
    results = []
    for v in variants:
        wall, cpu = _median_phases(runs[v])
        results.append(
            VariantResult(
                variant=v,
                wall_s=wall,
                cpu_s=cpu,
                total_wall_s=_total(runs[v], lambda t: t.wall_s),
                total_cpu_s=_total(runs[v], lambda t: t.cpu_s),
                max_abs_err=max(errs[v]) if errs[v] else None,
            )
        )
    return _with_overheads(n, d, params, tuple(results), note)


SECURE_PHASES = ("keys_and_shares", "masking", "unmasking")


def _with_overheads(
    n: int, d: int, params: int, results: tuple[VariantResult, ...], note: str
) -> ConfigResult:
    total = {r.variant: r.total_wall_s for r in results}
    base = total["plain"]

    def over(v: str) -> float:
        return (total[v] - base) / base if v in total else float("nan")

    return ConfigResult(
        n, d, params, results, over("secagg"), over("plain+dp"), over("secagg+dp"),
        note,
    )  # fmt: skip


def added_by_phases(res: ConfigResult) -> dict[str, float]:
    """What each privacy layer adds to the plain round, from its own phases.

    secagg / secagg+: key agreement, masking and unmasking minus the plain mean
    they replace; dp: DP training minus plain training; each as a share of the
    plain round's wall time.  Less noisy than comparing whole rounds, whose
    training times vary run to run.
    """
    by = {r.variant: r for r in res.variants}
    plain = by["plain"]
    base = plain.total_wall_s
    out: dict[str, float] = {}
    for v in ("secagg", "secagg+"):
        if v in by:
            extra = sum(by[v].wall_s[p] for p in SECURE_PHASES)
            out[v] = (extra - plain.wall_s["plain_aggregation"]) / base
    if "plain+dp" in by:
        dp_train = by["plain+dp"].wall_s["training"]
        out["dp"] = (dp_train - plain.wall_s["training"]) / base
    return out


def print_config(res: ConfigResult) -> None:
    """One table per (n, d): wall seconds per phase and the added share."""
    print(f"\n### n={res.n} clients, d={res.params:,} parameters ({res.note or 'ok'})")
    headers = ["variant", *PHASES, "round wall s", "round CPU s", "vs plain"]
    base = next(r for r in res.variants if r.variant == "plain").total_wall_s
    rows = []
    for r in res.variants:
        added = (r.total_wall_s - base) / base
        rows.append(
            [r.variant]
            + [fmt(r.wall_s[p]) for p in PHASES]
            + [fmt(r.total_wall_s), fmt(r.total_cpu_s), f"{100 * added:+.1f} %"]
        )
    print_table(headers, rows)
    layers = ", ".join(
        f"{name} {100 * x:+.1f} %" for name, x in added_by_phases(res).items()
    )
    print(f"\nadded to the plain round by each layer's own phases (wall): {layers}")


def load_results(path: Path) -> list[ConfigResult]:
    """The ConfigResults of a JSON file this script wrote."""
    payload = json.loads(path.read_text())
    out = []
    for raw in payload["results"]:
        variants = tuple(VariantResult(**v) for v in raw.pop("variants"))
        nan = float("nan")
        for key in ("secagg_overhead", "dp_overhead", "both_overhead"):
            raw[key] = nan if raw[key] is None else raw[key]
        out.append(ConfigResult(variants=variants, **raw))
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--render", type=Path, help="print the tables of a JSON result")
    p.add_argument("--quick", action="store_true", help="tiny sizes, < 1 minute")
    p.add_argument("--repeats", type=int, default=None, help="rounds per variant")
    p.add_argument("--clients", type=int, nargs="*", help="override n values")
    p.add_argument("--dims", type=int, nargs="*", help="override d values")
    p.add_argument("--out", type=Path, default=None, help="JSON path")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        for res in load_results(args.render):
            print_config(res)
        return 0
    plan = QUICK if args.quick else FULL
    plan = Plan(
        clients=tuple(args.clients or plan.clients),
        dims=tuple(args.dims or plan.dims),
        repeats=args.repeats or plan.repeats,
        examples=plan.examples,
        dp_max_nd=plan.dp_max_nd,
    )
    pin_threads()
    state = _ours.status()
    if state != "ready":
        print(f"secagg unavailable: {state}")
        return 1
    payload: dict[str, object] = {"machine_start": machine_info(), "plan": plan}
    payload["quick"] = args.quick
    results = []
    for n in plan.clients:
        for d in plan.dims:
            res = measure_config(n, d, plan)
            print_config(res)
            results.append(res)
    payload["results"] = results
    payload["machine_end"] = machine_info()
    out = args.out
    if out is None and not args.quick:
        out = RESULTS_DIR / "round_overhead.json"
    if out is not None:
        write_json(out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
