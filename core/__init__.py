"""fedshield's FedAvg core: parameters, local training, aggregation, the loop.

The public surface is `__all__`. The two plug points are
`core.interfaces.Trainer` and `core.interfaces.Aggregator`; `Federation`
runs rounds with any implementation of both (`LocalTrainer` and
`PlainAggregator` here; DP and secure ones compose `dp` and `secagg`).

>>> import torch
>>> from core import ParamSpec
>>> ParamSpec.from_module(torch.nn.Linear(4, 2)).numel
10
"""

from __future__ import annotations

from core.aggregation import (
    PlainAggregator,
    ServerOptimizer,
    weighted_mean,
    weighted_metrics,
)
from core.checkpoint import load_checkpoint, save_checkpoint
from core.config import FederationConfig, LocalTrainingConfig, OptimizerKind
from core.data import (
    TabularSplit,
    load_breast_cancer_split,
    load_rdataset,
    standardise,
    stratified_split,
    to_client_datasets,
    to_dataset,
)
from core.errors import (
    CheckpointMismatchError,
    ConfigError,
    FederationError,
    ParamSpecError,
    PartitionError,
    RoundAborted,
)
from core.evaluation import EvalResult, count_correct, evaluate, evaluate_per_client
from core.federation import Federation, FederationResult
from core.interfaces import (
    AggregateResult,
    Aggregator,
    ClientDataset,
    ClientDeclined,
    ClientUpdate,
    RoundContext,
    StateDict,
    Trainer,
    TrainOutcome,
    TrainTask,
)
from core.params import ParamEntry, ParamSpec
from core.partition import (
    DirichletPartitioner,
    IidPartitioner,
    NaturalIdPartitioner,
    Partition,
    Partitioner,
    QuantitySkewPartitioner,
)
from core.reporting import ConsoleReporter, MetricsLog, RoundRecord, format_round
from core.sampling import ClientSampler, cohort_size
from core.trainer import LocalTrainer, make_optimizer

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
    "DirichletPartitioner",
    "EvalResult",
    "Federation",
    "FederationConfig",
    "FederationError",
    "FederationResult",
    "IidPartitioner",
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
    "RoundAborted",
    "RoundContext",
    "RoundRecord",
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
    "load_breast_cancer_split",
    "load_checkpoint",
    "load_rdataset",
    "make_optimizer",
    "save_checkpoint",
    "standardise",
    "stratified_split",
    "to_client_datasets",
    "to_dataset",
    "weighted_mean",
    "weighted_metrics",
]
