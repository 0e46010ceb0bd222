"""Run a pilot from a `PilotConfig`: data, split, model, DP, secure sums, report.

`run_pilot(config)` is what ``fedshield run CONFIG.toml`` calls. Every input
problem (missing file or column, a split leaving an institution smaller than
a batch, a ring too small for the cohort) is raised as
`core.errors.ConfigError` *before* any folder is created.

Run folder policy: the run is built in ``<output_dir>.partial`` and renamed
to ``<output_dir>`` only after ``report.md`` (written last) exists; on any
error the ``.partial`` folder is removed. So a folder named ``output_dir``
is always a complete run. An existing ``output_dir`` is replaced only if it
holds a previous run (``config.toml`` and ``report.md``); anything else is
refused rather than deleted.
"""

from __future__ import annotations

import math
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
import secagg
from core import data as cdata
from core.aggregation import PlainAggregator
from core.config import FederationConfig, LocalTrainingConfig
from core.dp_trainer import DPTrainer, ledger_path, prepare_dp_model
from core.errors import ConfigError
from core.evaluation import evaluate
from core.federation import Federation
from core.interfaces import (
    AggregateResult,
    Aggregator,
    ClientDataset,
    ClientUpdate,
    RoundContext,
    StateDict,
    Trainer,
    TrainTask,
)
from core.params import ParamSpec
from core.pilot.data import PilotData, load_pilot_data
from core.pilot.report import (
    CoordinatorRound,
    InstitutionRow,
    PilotReport,
    TestScores,
    write_markdown,
    write_plots,
)
from core.pilot.schema import ModelKind, PilotConfig, to_toml
from core.reporting import ConsoleReporter
from core.secure_aggregator import SecureAggregationConfig, SecureAggregator
from core.trainer import LocalTrainer

__all__ = ["build_model", "expected_rounds", "run_pilot"]


def build_model(cfg: PilotConfig, num_features: int, num_classes: int) -> nn.Module:
    """The initial global model (seeded by ``run.seed``)."""
    torch.manual_seed(cfg.run.seed)
    m = cfg.model
    if m.kind is ModelKind.LOGISTIC:
        return nn.Sequential(nn.Linear(num_features, num_classes))
    layers: list[nn.Module] = []
    width = num_features
    for _ in range(m.hidden_layers):
        layers += [nn.Linear(width, m.hidden_units), nn.ReLU()]
        width = m.hidden_units
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


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
                aborted=str(exc) or type(exc).__name__))
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
            aborted=None))
        return result

    def state_dict(self) -> StateDict:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state)


def _check_sizes(cfg: PilotConfig, data: PilotData) -> int:
    """Refuse splits the protocols cannot run; returns the cohort size."""
    sizes = [c.num_examples for c in data.clients]
    for name, n in zip(data.names, sizes, strict=True):
        if n < cfg.training.batch_size:
            raise ConfigError(
                f"split: institution {name!r} has {n} training rows, fewer than "
                f"training.batch_size = {cfg.training.batch_size}; lower the batch "
                "size, or pool small sites (split.min_site_rows) / use fewer "
                "clients (split.num_clients)"
            )
    k = len(sizes)
    per_round = cfg.federation.clients_per_round or k
    if per_round > k:
        raise ConfigError(
            f"federation.clients_per_round must be <= the {k} institutions; "
            f"found {per_round}"
        )
    sa = cfg.secure_aggregation
    if sa.enabled:
        if per_round < 2:
            raise ConfigError("federation.clients_per_round must be >= 2 with "
                              "secure aggregation (a sum of one is that update)")
        weight = sa.max_weight or max(sizes)
        need = sa.value_bits + weight.bit_length() + (per_round - 1).bit_length() + 1
        if need > sa.ring_bits:
            raise ConfigError(
                f"secure_aggregation.ring_bits must be >= {need} for {per_round} "
                f"clients per round with weights up to {weight} and value_bits "
                f"{sa.value_bits}; found {sa.ring_bits}"
            )
    return per_round


def expected_rounds(cfg: PilotConfig, institutions: int) -> int:
    """Rounds an institution expects to train in: σ is calibrated for these,
    so institutions sampled in only some rounds do not leave ε unspent."""
    per_round = cfg.federation.clients_per_round or institutions
    return max(1, math.ceil(cfg.federation.rounds * per_round / institutions))


def _trainer(cfg: PilotConfig, model: nn.Module, clients: list[ClientDataset],
             ledgers: Path) -> Trainer:
    t, p = cfg.training, cfg.privacy
    if not p.enabled:
        local = LocalTrainingConfig(local_epochs=t.local_epochs,
                                    batch_size=t.batch_size,
                                    learning_rate=t.learning_rate)
        return LocalTrainer(model, config=local, seed=cfg.run.seed)
    dpc = dp.DPConfig(
        delta=p.delta, max_grad_norm=p.max_grad_norm, epsilon_budget=p.epsilon_budget,
        planned_rounds=expected_rounds(cfg, len(clients)),
        batch_size=t.batch_size,
        local_epochs=t.local_epochs,
        noise_multiplier=p.noise_multiplier or None,
        target_epsilon=p.target_epsilon or None,
    )
    try:
        return DPTrainer(model, clients=clients, config=dpc, ledger_dir=ledgers,
                         learning_rate=t.learning_rate)
    except dp.DPConfigError as exc:
        raise ConfigError(f"privacy: {exc}") from None


def _aggregator(cfg: PilotConfig, clients: list[ClientDataset]) -> Aggregator:
    sa = cfg.secure_aggregation
    if not sa.enabled:
        return PlainAggregator()
    return SecureAggregator(SecureAggregationConfig(
        clip=sa.clip, value_bits=sa.value_bits, ring_bits=sa.ring_bits,
        max_weight=sa.max_weight or max(c.num_examples for c in clients),
        mode=secagg.SecurityMode(sa.mode.value),
        dropout_tolerance=sa.dropout_tolerance,
        corrupt_fraction=sa.corrupt_fraction, dropout_rate=sa.dropout_rate,
        seed=cfg.run.seed))


def _centralised(cfg: PilotConfig, model: nn.Module, data: PilotData
                 ) -> tuple[nn.Module, list[tuple[int, float, float]]]:
    """Non-private SGD on the pooled training rows: same model, initial
    weights, batch size and learning rate, one round's epochs per point."""
    t = cfg.training
    local = LocalTrainingConfig(local_epochs=t.local_epochs, batch_size=t.batch_size,
                                learning_rate=t.learning_rate)
    trainer = LocalTrainer(model, config=local, seed=cfg.run.seed)
    spec = ParamSpec.from_module(model)
    params = spec.flatten(model)
    pooled = cdata.to_dataset(0, data.x_train, data.y_train)
    final = build_model(cfg, data.num_features, data.num_classes)
    curve = []
    for r in range(1, cfg.federation.rounds + 1):
        out = trainer.train(TrainTask(round_index=r, client_id=0,
                                      global_params=params, data=pooled))
        assert isinstance(out, ClientUpdate)  # the plain trainer never declines
        params = params + out.delta
        spec.load_into(final, params)
        ev = evaluate(final, data.test)
        curve.append((r, ev.loss, ev.accuracy or 0.0))
    return final, curve


def _prepare_folder(out: Path) -> Path:
    if out.exists() and not (
        (out / "config.toml").is_file() and (out / "report.md").is_file()
    ):
        raise ConfigError(
            f"run.output_dir {str(out)!r} exists and is not a fedshield run "
            "folder; choose another folder (it is not overwritten)"
        )
    partial = out.with_name(out.name + ".partial")
    if partial.exists():  # a crashed earlier run of this same folder
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    return partial


def _publish(partial: Path, out: Path) -> None:
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    if old.exists():
        shutil.rmtree(old)


def run_pilot(config: PilotConfig, *, reporter: ConsoleReporter | None = None
              ) -> PilotReport:
    """Run the pilot described by `config`; returns its report (see module doc)."""
    started = time.perf_counter()
    data = load_pilot_data(config)
    per_round = _check_sizes(config, data)
    out = Path(config.run.output_dir)
    partial = _prepare_folder(out)
    try:
        report = _run(config, data, per_round, partial, reporter, started)
        _publish(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return report


def _run(cfg: PilotConfig, data: PilotData, per_round: int, folder: Path,
         reporter: ConsoleReporter | None, started: float) -> PilotReport:
    (folder / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
    base = build_model(cfg, data.num_features, data.num_classes)
    model = prepare_dp_model(base) if cfg.privacy.enabled else base
    ledgers = folder / "ledgers"
    trainer = _trainer(cfg, model, data.clients, ledgers)
    observed = _Observed(_aggregator(cfg, data.clients), [], {})
    k = len(data.clients)
    fed = Federation(
        model=model, clients=data.clients, trainer=trainer, aggregator=observed,
        config=FederationConfig(rounds=cfg.federation.rounds,
                                fraction_fit=per_round / k, min_fit_clients=per_round,
                                server_learning_rate=cfg.federation.server_learning_rate,
                                server_momentum=cfg.federation.server_momentum,
                                seed=cfg.run.seed, checkpoint_every=0),
        test_data=data.test, run_dir=folder, reporter=reporter,
        run_info={"pilot": cfg.run.name, "institutions": list(data.names),
                  "label_counts": data.label_counts},
    )
    result = fed.run()
    final = fed.global_model()
    torch.save(final.state_dict(), folder / "model.pt")
    central, curve = (_centralised(cfg, model, data) if cfg.run.centralised_baseline
                      else (None, []))
    report = PilotReport(
        config=cfg, run_dir=Path(cfg.run.output_dir), federated=_scores(final, data),
        centralised=None if central is None else _scores(central, data),
        majority_rate=float(np.bincount(data.y_test).max() / len(data.y_test)),
        rounds_completed=result.rounds_completed, stopped_early=result.stopped_early,
        planned_rounds=expected_rounds(cfg, k),
        seconds=time.perf_counter() - started, num_params=fed.spec.numel,
        class_names=data.class_names,
        institutions=_institutions(cfg, data, final, central, trainer, observed),
        coordinator=tuple(observed.rounds),
        federated_curve=tuple((r.round_index, r.eval_loss, r.eval_accuracy or 0.0)
                              for r in result.history if r.eval_loss is not None),
        centralised_curve=tuple(curve),
        epsilon_by_round=_epsilon_curves(cfg, data, ledgers),
    )
    write_markdown(report, folder, write_plots(report, folder))
    return report


def _scores(model: nn.Module, data: PilotData) -> TestScores:
    """Accuracy, mean per-class recall and (binary) ROC AUC on the test rows."""
    with torch.no_grad():
        prob = torch.softmax(model(data.test.features), dim=1).numpy()
    y, pred = data.y_test, prob.argmax(axis=1)
    recalls = [float(np.mean(pred[y == c] == c))
               for c in range(data.num_classes) if np.any(y == c)]
    auc = None
    if data.num_classes == 2 and 0 < y.sum() < len(y):
        # Mann-Whitney U with average ranks for ties: no scikit-learn needed.
        _, inverse, counts = np.unique(prob[:, 1], return_inverse=True,
                                       return_counts=True)
        ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
        pos = int(y.sum())
        auc = float((ranks[y == 1].sum() - pos * (pos + 1) / 2)
                    / (pos * (len(y) - pos)))
    return TestScores(accuracy=float(np.mean(pred == y)),
                      balanced_accuracy=float(np.mean(recalls)), roc_auc=auc)


def _institutions(cfg: PilotConfig, data: PilotData, final: nn.Module,
                  central: nn.Module | None, trainer: Trainer, observed: _Observed
                  ) -> tuple[InstitutionRow, ...]:
    private = trainer.clients if isinstance(trainer, DPTrainer) else {}
    rows = []
    for client, name, ev_data, eval_on in zip(
        data.clients, data.names, data.eval_sets, data.eval_on, strict=True
    ):
        cid = client.client_id
        pc = private.get(cid)
        sent = observed.bytes_sent.get(cid, [])
        empty = ev_data.num_examples == 0
        rows.append(InstitutionRow(
            name=name, train_rows=client.num_examples,
            label_counts=data.label_counts[name], eval_rows=ev_data.num_examples,
            eval_on=eval_on,
            federated_accuracy=None if empty else evaluate(final, ev_data).accuracy,
            centralised_accuracy=(None if empty or central is None
                                  else evaluate(central, ev_data).accuracy),
            epsilon_spent=None if pc is None else pc.epsilon_spent(),
            epsilon_budget=None if pc is None else cfg.privacy.epsilon_budget,
            rounds_trained=len(sent) if pc is None else len(pc.ledger.entries),
            mean_bytes_sent=float(np.mean(sent)) if sent else 0.0,
            ledger=(f"ledgers/{pc.ledger.path.name}"
                    if pc is not None and pc.ledger.entries else ""),
        ))
    return tuple(rows)


def _epsilon_curves(cfg: PilotConfig, data: PilotData, ledgers: Path
                    ) -> dict[str, tuple[tuple[int, float], ...]]:
    if not cfg.privacy.enabled:
        return {}
    curves = {}
    for client, name in zip(data.clients, data.names, strict=True):
        path = ledger_path(ledgers, client.client_id)
        # A client never sampled was never charged, and has no ledger file.
        entries = dp.read_ledger(path) if path.exists() else ()
        curves[name] = ((0, 0.0), *((e.round, e.epsilon) for e in entries))
    return curves
