"""Run a pilot from a `PilotConfig`: data, split, model, DP, secure sums, report.

`run_pilot(config)` is what ``fedshield run CONFIG.toml`` calls. Every input
problem (missing file or column, a split leaving an institution smaller than
a batch, a ring too small for the cohort) is raised as
`core.errors.ConfigError` *before* any folder is created.

Run folder policy: a run never replaces anything. It is built in
``<folder>.partial`` and renamed to ``<folder>`` only after ``report.md``
(written last) exists; on any error the ``.partial`` folder is removed, so a
folder without ``.partial`` is always a complete run. ``<folder>`` is
``run.output_dir``, or, when that exists already (an earlier run, or
anything else), the first free ``<output_dir>-2``, ``-3``, …, and the run
says so. The privacy ledgers are not in the run folder: they live in the
pilot's ledger folder (`core.pilot.ledgers`) and every run continues them.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import dp
from core.aggregation import PlainAggregator
from core.dp_trainer import DPTrainer, prepare_dp_model
from core.errors import ConfigError
from core.evaluation import evaluate
from core.federation import Federation
from core.interfaces import (
    AggregateResult,
    Aggregator,
    ClientUpdate,
    RoundContext,
    StateDict,
    Trainer,
)
from core.params import ParamSpec
from core.pilot.baseline import build_model, centralised_baseline, score_model
from core.pilot.config_file import to_toml
from core.pilot.data import PilotData, load_pilot_data
from core.pilot.ledgers import HeadRecorder, heads_path, ledger_dir, read_heads
from core.pilot.markdown import data_line as _data_line
from core.pilot.markdown import write_markdown
from core.pilot.plan import RunPlan, make_plan
from core.pilot.plots import write_plots
from core.pilot.provenance import build_provenance
from core.pilot.report import CoordinatorRound, InstitutionRow, PilotReport
from core.pilot.schema import PilotConfig, named_error
from core.reporting import ConsoleReporter
from core.secure_aggregator import SecureAggregator
from core.trainer import LocalTrainer

__all__ = ["free_folder", "prepare_folder", "publish", "run_pilot"]


@dataclass(slots=True)
class _Observed:
    """Wraps the aggregator to keep what the coordinator learns each round
    (sums only) and each survivor's traffic, for the report."""

    inner: Aggregator
    rounds: list[CoordinatorRound]
    bytes_sent: dict[int, list[int]]

    def aggregate(
        self, context: RoundContext, updates: Sequence[ClientUpdate]
    ) -> AggregateResult:
        try:
            result = self.inner.aggregate(context, updates)
        except Exception as exc:
            self.rounds.append(CoordinatorRound(
                round_index=context.round_index, cohort=len(context.cohort),
                survivors=0, dropped=0, total_weight=0.0, update_sum_norm=0.0,
                clipped_fraction=None,
                aborted=str(exc) or type(exc).__name__))  # fmt: skip
            raise
        session = getattr(self.inner, "last_session", None)
        if session is not None:
            sent = dict(session.bytes_sent)
        else:  # plain sums: each client sends its float32 update in the clear
            sent = {u.client_id: 4 * u.delta.numel() for u in updates}
        for cid, n in sent.items():
            self.bytes_sent.setdefault(cid, []).append(int(n))
        self.rounds.append(CoordinatorRound(
            round_index=context.round_index, cohort=len(context.cohort),
            survivors=result.num_aggregated, dropped=len(result.dropped),
            total_weight=result.total_weight,
            update_sum_norm=float(result.mean_delta.norm()) * result.total_weight,
            clipped_fraction=result.metrics.get("clipped_fraction"),
            aborted=None))  # fmt: skip
        return result

    def state_dict(self) -> StateDict:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state)


def _trainer(
    cfg: PilotConfig, plan: RunPlan, model: nn.Module, data: PilotData, ledgers: Path
) -> Trainer:
    if plan.privacy is None:
        return LocalTrainer(model, config=cfg.training, seed=cfg.run.seed)
    try:
        return DPTrainer(
            model, clients=data.clients, config=plan.privacy, ledger_dir=ledgers,
            learning_rate=cfg.training.learning_rate,
            optimizer=cfg.privacy.optimizer,
            recorded_heads=read_heads(heads_path(ledgers)),
        )  # fmt: skip
    except dp.LedgerMismatchError as exc:
        raise ConfigError(
            f"privacy.ledger_dir: {exc}; a ledger continues only under the "
            "settings it was started with (or choose another ledger_dir)"
        ) from None
    except dp.PrivacyError as exc:
        names = {"delta": "privacy.delta", "epsilon_budget": "privacy.epsilon_budget",
                 "target_epsilon": "privacy.target_epsilon",
                 "noise_multiplier": "privacy.noise_multiplier"}  # fmt: skip
        raise named_error(exc, "privacy", names) from None


def _aggregator(cfg: PilotConfig, plan: RunPlan) -> Aggregator:
    if plan.secure_aggregation is None:
        return PlainAggregator()
    return SecureAggregator(
        plan.secure_aggregation, simulation=cfg.secure_aggregation.simulation
    )


def free_folder(out: Path) -> Path:
    """`out`, or the first ``out-2``, ``out-3``, … that does not exist."""
    folder, k = out, 1
    while folder.exists() or folder.is_symlink():
        k += 1
        folder = out.with_name(f"{out.name}-{k}")
    return folder


def prepare_folder(folder: Path) -> Path:
    """A fresh ``<folder>.partial`` to build the run in."""
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():  # a crashed earlier run of this same folder
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    return partial


def publish(partial: Path, folder: Path) -> Path:
    """Rename the finished run into place, never over anything."""
    target = free_folder(folder)
    partial.rename(target)
    return target


def run_pilot(
    config: PilotConfig, *, reporter: ConsoleReporter | None = None
) -> PilotReport:
    """Run the pilot described by `config`; returns its report (see module doc)."""
    started = time.perf_counter()
    data = load_pilot_data(config)
    model = build_model(config, data.table.num_features, data.table.num_classes)
    plan = make_plan(
        config,
        data.names,
        [c.num_examples for c in data.clients],
        ParamSpec.from_module(model).numel,
    )
    if plan.privacy is not None:  # a bad heads file is refused before any folder
        read_heads(heads_path(ledger_dir(config)))
    out = Path(config.run.output_dir)
    folder = free_folder(out)
    if folder != out:
        (reporter or ConsoleReporter()).message(
            f"run.output_dir {out} already exists and is kept; this run "
            f"writes to {folder}"
        )
    partial = prepare_folder(folder)
    try:
        report = _run(config, plan, data, partial, folder, reporter, started)
        published = publish(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return dataclasses.replace(report, run_dir=published)


def _run(
    cfg: PilotConfig,
    plan: RunPlan,
    data: PilotData,
    folder: Path,
    run_dir: Path,
    reporter: ConsoleReporter | None,
    started: float,
) -> PilotReport:
    (folder / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
    base = build_model(cfg, data.table.num_features, data.table.num_classes)
    model = prepare_dp_model(base) if plan.privacy is not None else base
    ledgers = ledger_dir(cfg)
    trainer = _trainer(cfg, plan, model, data, ledgers)
    recorder = _head_recorder(trainer, reporter, ledgers)
    observed = _Observed(_aggregator(cfg, plan), [], {})
    # What the coordinator logs is public: names, never a site's rows or labels.
    fed = Federation(
        model=model, clients=data.clients, trainer=trainer, aggregator=observed,
        config=plan.federation, test_data=data.test, run_dir=folder,
        reporter=reporter if recorder is None else recorder,
        run_info={"pilot": cfg.run.name, "institutions": list(data.names),
                  "ledger_dir": str(ledgers)},
    )  # fmt: skip
    result = fed.run()
    final = fed.global_model()
    torch.save(final.state_dict(), folder / "model.pt")
    provenance = build_provenance(
        data, _data_line(cfg), folder / "model.pt", trainer, heads_path(ledgers)
    )
    central, curve = (
        centralised_baseline(cfg, model, data)
        if cfg.run.centralised_baseline
        else (None, [])
    )
    y_test = data.table.y_test
    report = PilotReport(
        config=cfg, plan=plan, run_dir=run_dir,
        federated=score_model(final, data),
        centralised=None if central is None else score_model(central, data),
        majority_rate=float(np.bincount(y_test).max() / len(y_test)),
        rounds_completed=result.rounds_completed, stopped_early=result.stopped_early,
        seconds=time.perf_counter() - started, num_params=fed.spec.numel,
        class_names=data.table.class_names,
        institutions=_institutions(cfg, data, final, central, trainer, observed),
        coordinator=tuple(observed.rounds),
        federated_curve=tuple((r.round_index, r.eval_loss, r.eval_accuracy or 0.0)
                              for r in result.history if r.eval_loss is not None),
        centralised_curve=tuple(curve),
        epsilon_by_round=_epsilon_curves(data, trainer),
        ledger_dir=ledgers if plan.privacy is not None else None,
        imputed_unheld=data.imputed_unheld, provenance=provenance,
        heads_by_round=() if recorder is None else recorder.by_round,
    )  # fmt: skip
    write_markdown(report, folder, write_plots(report, folder))
    return report


def _head_recorder(
    trainer: Trainer, reporter: ConsoleReporter | None, ledgers: Path
) -> HeadRecorder | None:
    """The coordinator's per-round record of the ledger heads (under DP)."""
    if not isinstance(trainer, DPTrainer):
        return None
    inner = reporter if reporter is not None else ConsoleReporter()
    return HeadRecorder(inner, trainer, heads_path(ledgers))


def _institutions(
    cfg: PilotConfig,
    data: PilotData,
    final: nn.Module,
    central: nn.Module | None,
    trainer: Trainer,
    observed: _Observed,
) -> tuple[InstitutionRow, ...]:
    private = trainer.clients if isinstance(trainer, DPTrainer) else {}
    offset = trainer.round_offset if isinstance(trainer, DPTrainer) else 0
    budget = None if cfg.privacy.config is None else cfg.privacy.config.epsilon_budget
    rows = []
    for client, name, ev_data, eval_on in zip(
        data.clients, data.names, data.eval_sets, data.eval_on, strict=True
    ):
        pc = private.get(client.client_id)
        sent = observed.bytes_sent.get(client.client_id, [])
        empty = ev_data.num_examples == 0
        rows.append(InstitutionRow(
            name=name, train_rows=client.num_examples,
            label_counts=data.label_counts[name], eval_rows=ev_data.num_examples,
            eval_on=eval_on,
            federated_accuracy=None if empty else evaluate(final, ev_data).accuracy,
            centralised_accuracy=(None if empty or central is None
                                  else evaluate(central, ev_data).accuracy),
            epsilon_spent=None if pc is None else pc.epsilon_spent(),
            epsilon_budget=None if pc is None else budget,
            rounds_trained=len(sent) if pc is None else _rounds_after(pc, offset),
            mean_bytes_sent=float(np.mean(sent)) if sent else 0.0,
            ledger=str(pc.ledger.path) if pc is not None and pc.ledger.entries else "",
            imputed=data.imputed[name],
        ))  # fmt: skip
    return tuple(rows)


def _rounds_after(private: dp.PrivateClient, offset: int) -> int:
    """Rounds charged to the ledger after ledger round `offset` (this run's)."""
    return len({e.round for e in private.ledger.entries if e.round > offset})


def _epsilon_curves(
    data: PilotData, trainer: Trainer
) -> dict[str, tuple[tuple[int, float], ...]]:
    if not isinstance(trainer, DPTrainer):
        return {}
    private = trainer.clients
    curves = {}
    for client, name in zip(data.clients, data.names, strict=True):
        # The ledgers as each client verified them; a client never charged (or
        # whose ledger was unreadable) has no curve beyond its start.
        pc = private.get(client.client_id)
        entries = () if pc is None else pc.ledger.entries
        curves[name] = ((0, 0.0), *((e.round, e.epsilon) for e in entries))
    return curves
