"""fedshield's FedAvg core: parameters, local training, aggregation, the loop.

The public surface is `__all__`. The two plug points are
`core.interfaces.Trainer` and `core.interfaces.Aggregator`; `Federation`
runs rounds with any implementation of both (`LocalTrainer` and
`PlainAggregator` here; `DPTrainer` composes `dp`, `SecureAggregator`
composes `secagg`).

Every name is loaded on first use, so ``import core`` costs nothing: torch
is imported with the first tensor-handling name, and `dp` (with Opacus) or
`secagg` only with the adapter that needs it.

>>> import torch
>>> from core import ParamSpec
>>> ParamSpec.from_module(torch.nn.Linear(4, 2)).numel
10
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.aggregation import PlainAggregator as PlainAggregator
    from core.aggregation import ServerOptimizer as ServerOptimizer
    from core.aggregation import weighted_mean as weighted_mean
    from core.aggregation import weighted_metrics as weighted_metrics
    from core.checkpoint import load_checkpoint as load_checkpoint
    from core.checkpoint import save_checkpoint as save_checkpoint
    from core.config import DropoutSimulation as DropoutSimulation
    from core.config import FederationConfig as FederationConfig
    from core.config import LocalTrainingConfig as LocalTrainingConfig
    from core.config import OptimizerKind as OptimizerKind
    from core.data import TabularSplit as TabularSplit
    from core.data import load_breast_cancer_split as load_breast_cancer_split
    from core.data import load_rdataset as load_rdataset
    from core.data import standardise as standardise
    from core.data import stratified_split as stratified_split
    from core.data import to_client_datasets as to_client_datasets
    from core.data import to_dataset as to_dataset
    from core.dp_trainer import DPTrainer as DPTrainer
    from core.dp_trainer import ledger_path as ledger_path
    from core.dp_trainer import prepare_dp_model as prepare_dp_model
    from core.errors import CheckpointMismatchError as CheckpointMismatchError
    from core.errors import ConfigError as ConfigError
    from core.errors import DataError as DataError
    from core.errors import FederationError as FederationError
    from core.errors import InvalidUpdateError as InvalidUpdateError
    from core.errors import ParamSpecError as ParamSpecError
    from core.errors import PartitionError as PartitionError
    from core.errors import RoundAborted as RoundAborted
    from core.evaluation import EvalResult as EvalResult
    from core.evaluation import count_correct as count_correct
    from core.evaluation import evaluate as evaluate
    from core.evaluation import evaluate_per_client as evaluate_per_client
    from core.federation import Federation as Federation
    from core.federation import FederationResult as FederationResult
    from core.interfaces import AggregateResult as AggregateResult
    from core.interfaces import Aggregator as Aggregator
    from core.interfaces import ClientDataset as ClientDataset
    from core.interfaces import ClientDeclined as ClientDeclined
    from core.interfaces import ClientUpdate as ClientUpdate
    from core.interfaces import ReportsRoundDetails as ReportsRoundDetails
    from core.interfaces import ReportsRoundMetrics as ReportsRoundMetrics
    from core.interfaces import RoundContext as RoundContext
    from core.interfaces import StateDict as StateDict
    from core.interfaces import Trainer as Trainer
    from core.interfaces import TrainOutcome as TrainOutcome
    from core.interfaces import TrainTask as TrainTask
    from core.params import ParamEntry as ParamEntry
    from core.params import ParamSpec as ParamSpec
    from core.partition import DirichletPartitioner as DirichletPartitioner
    from core.partition import IidPartitioner as IidPartitioner
    from core.partition import NaturalIdPartitioner as NaturalIdPartitioner
    from core.partition import Partition as Partition
    from core.partition import Partitioner as Partitioner
    from core.partition import QuantitySkewPartitioner as QuantitySkewPartitioner
    from core.reporting import ConsoleReporter as ConsoleReporter
    from core.reporting import MetricsLog as MetricsLog
    from core.reporting import RoundRecord as RoundRecord
    from core.reporting import format_round as format_round
    from core.sampling import ClientSampler as ClientSampler
    from core.sampling import cohort_size as cohort_size
    from core.secure_aggregator import SecureAggregator as SecureAggregator
    from core.trainer import LocalTrainer as LocalTrainer
    from core.trainer import make_optimizer as make_optimizer

# Where each public name lives; the adapters are the only entries that
# pull in `dp` or `secagg`.
_EXPORTS: dict[str, str] = {
    "PlainAggregator": "core.aggregation",
    "ServerOptimizer": "core.aggregation",
    "weighted_mean": "core.aggregation",
    "weighted_metrics": "core.aggregation",
    "load_checkpoint": "core.checkpoint",
    "save_checkpoint": "core.checkpoint",
    "DropoutSimulation": "core.config",
    "FederationConfig": "core.config",
    "LocalTrainingConfig": "core.config",
    "OptimizerKind": "core.config",
    "TabularSplit": "core.data",
    "load_breast_cancer_split": "core.data",
    "load_rdataset": "core.data",
    "standardise": "core.data",
    "stratified_split": "core.data",
    "to_client_datasets": "core.data",
    "to_dataset": "core.data",
    "CheckpointMismatchError": "core.errors",
    "ConfigError": "core.errors",
    "DataError": "core.errors",
    "FederationError": "core.errors",
    "InvalidUpdateError": "core.errors",
    "ParamSpecError": "core.errors",
    "PartitionError": "core.errors",
    "RoundAborted": "core.errors",
    "EvalResult": "core.evaluation",
    "count_correct": "core.evaluation",
    "evaluate": "core.evaluation",
    "evaluate_per_client": "core.evaluation",
    "Federation": "core.federation",
    "FederationResult": "core.federation",
    "AggregateResult": "core.interfaces",
    "Aggregator": "core.interfaces",
    "ClientDataset": "core.interfaces",
    "ClientDeclined": "core.interfaces",
    "ClientUpdate": "core.interfaces",
    "ReportsRoundDetails": "core.interfaces",
    "ReportsRoundMetrics": "core.interfaces",
    "RoundContext": "core.interfaces",
    "StateDict": "core.interfaces",
    "TrainOutcome": "core.interfaces",
    "TrainTask": "core.interfaces",
    "Trainer": "core.interfaces",
    "ParamEntry": "core.params",
    "ParamSpec": "core.params",
    "DirichletPartitioner": "core.partition",
    "IidPartitioner": "core.partition",
    "NaturalIdPartitioner": "core.partition",
    "Partition": "core.partition",
    "Partitioner": "core.partition",
    "QuantitySkewPartitioner": "core.partition",
    "ConsoleReporter": "core.reporting",
    "MetricsLog": "core.reporting",
    "RoundRecord": "core.reporting",
    "format_round": "core.reporting",
    "ClientSampler": "core.sampling",
    "cohort_size": "core.sampling",
    "LocalTrainer": "core.trainer",
    "make_optimizer": "core.trainer",
    "DPTrainer": "core.dp_trainer",
    "ledger_path": "core.dp_trainer",
    "prepare_dp_model": "core.dp_trainer",
    "SecureAggregator": "core.secure_aggregator",
}

__all__ = [
    "AggregateResult",
    "Aggregator",
    "CheckpointMismatchError",
    "ClientDataset",
    "ClientDeclined",
    "ClientSampler",
    "ClientUpdate",
    "ConfigError",
    "ConsoleReporter",
    "DPTrainer",
    "DataError",
    "DirichletPartitioner",
    "DropoutSimulation",
    "EvalResult",
    "Federation",
    "FederationConfig",
    "FederationError",
    "FederationResult",
    "IidPartitioner",
    "InvalidUpdateError",
    "LocalTrainer",
    "LocalTrainingConfig",
    "MetricsLog",
    "NaturalIdPartitioner",
    "OptimizerKind",
    "ParamEntry",
    "ParamSpec",
    "ParamSpecError",
    "Partition",
    "PartitionError",
    "Partitioner",
    "PlainAggregator",
    "QuantitySkewPartitioner",
    "ReportsRoundDetails",
    "ReportsRoundMetrics",
    "RoundAborted",
    "RoundContext",
    "RoundRecord",
    "SecureAggregator",
    "ServerOptimizer",
    "StateDict",
    "TabularSplit",
    "TrainOutcome",
    "TrainTask",
    "Trainer",
    "cohort_size",
    "count_correct",
    "evaluate",
    "evaluate_per_client",
    "format_round",
    "ledger_path",
    "load_breast_cancer_split",
    "load_checkpoint",
    "load_rdataset",
    "make_optimizer",
    "prepare_dp_model",
    "save_checkpoint",
    "standardise",
    "stratified_split",
    "to_client_datasets",
    "to_dataset",
    "weighted_mean",
    "weighted_metrics",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
