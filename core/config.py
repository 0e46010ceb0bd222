"""Frozen, validated configuration of a federation and of local training.

Every field is checked in `__post_init__`; a wrong value raises
`core.errors.ConfigError` naming the field, the constraint and the value, and
`from_dict` refuses unknown field names with the list of allowed ones (the
path a TOML config file will take).

>>> FederationConfig(rounds=3).server_learning_rate
1.0
>>> LocalTrainingConfig.from_dict({"optimizer": "adam"}).optimizer
<OptimizerKind.ADAM: 'adam'>
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from core import _validate as v
from core.errors import ConfigError

__all__ = [
    "DropoutSimulation",
    "FederationConfig",
    "LocalTrainingConfig",
    "OptimizerKind",
]

T = TypeVar("T")


class OptimizerKind(enum.Enum):
    """The client optimizer used for local training."""

    SGD = "sgd"
    ADAM = "adam"


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalTrainingConfig:
    """How a client trains locally in one round.

    `batch_size=0` means full batch (one step per epoch over all examples).
    `momentum` applies to SGD only; the optimizer is rebuilt every round, so no
    optimizer state leaks from one round (or one client) to the next.
    """

    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.1
    optimizer: OptimizerKind = OptimizerKind.SGD
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        v.check_int(owner, "local_epochs", self.local_epochs, minimum=1)
        v.check_int(owner, "batch_size", self.batch_size, minimum=0)
        v.check_float(owner, "learning_rate", self.learning_rate, low=0, low_open=True)
        v.check_enum(owner, "optimizer", self.optimizer, OptimizerKind)
        v.check_float(owner, "momentum", self.momentum, low=0, high=1, high_open=True)
        v.check_float(owner, "weight_decay", self.weight_decay, low=0)
        if self.optimizer is not OptimizerKind.SGD and self.momentum != 0:
            raise ConfigError(
                f"{owner}.momentum must be 0 unless optimizer is "
                f"{OptimizerKind.SGD.value!r}; found {self.momentum} with "
                f"optimizer {self.optimizer.value!r}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalTrainingConfig:
        """Build from plain values, refusing unknown fields."""
        return v.from_mapping(cls, data)


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationConfig:
    """The server side of FedAvg: rounds, sampling and the server step.

    Names follow Flower's FedAvg where one exists: each round samples
    ``max(min_fit_clients, round(fraction_fit × available))`` clients (all of
    them when fewer are available). The server step is
    ``w ← w + server_learning_rate · m`` with ``m ← server_momentum · m + Δ̄``
    (FedAvgM, Hsu et al. 2019; plain FedAvg when the momentum is 0).
    `eval_every` and `checkpoint_every` count rounds; 0 disables checkpoints.
    """

    rounds: int
    fraction_fit: float = 1.0
    min_fit_clients: int = 1
    server_learning_rate: float = 1.0
    server_momentum: float = 0.0
    seed: int = 0
    eval_every: int = 1
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        owner = type(self).__name__
        v.check_int(owner, "rounds", self.rounds, minimum=1)
        v.check_float(
            owner, "fraction_fit", self.fraction_fit, low=0, high=1, low_open=True
        )
        v.check_int(owner, "min_fit_clients", self.min_fit_clients, minimum=1)
        v.check_float(
            owner,
            "server_learning_rate",
            self.server_learning_rate,
            low=0,
            low_open=True,
        )
        v.check_float(
            owner,
            "server_momentum",
            self.server_momentum,
            low=0,
            high=1,
            high_open=True,
        )
        v.check_int(owner, "seed", self.seed, minimum=0)
        v.check_int(owner, "eval_every", self.eval_every, minimum=1)
        v.check_int(owner, "checkpoint_every", self.checkpoint_every, minimum=0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FederationConfig:
        """Build from plain values, refusing unknown fields."""
        return v.from_mapping(cls, data)


@dataclass(frozen=True, slots=True, kw_only=True)
class DropoutSimulation:
    """Simulated network failures, for trying a configuration in process.

    Each round every client vanishes with probability `dropout_rate`, at a
    stage drawn uniformly from the ones the aggregator offers. The draw uses
    a generator seeded by (`seed`, round): public scheduling randomness,
    never a secret, so a resumed run drops the same clients as an
    uninterrupted one.

    >>> sim = DropoutSimulation(dropout_rate=0.5, seed=1)
    >>> stages = ["early", "late"]
    >>> sim.drops(3, range(6), stages) == sim.drops(3, range(6), stages)
    True
    """

    dropout_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        v.check_float(
            owner, "dropout_rate", self.dropout_rate, low=0, high=1, high_open=True
        )
        v.check_int(owner, "seed", self.seed, minimum=0)

    def drops(
        self, round_index: int, client_ids: Iterable[int], stages: Sequence[T]
    ) -> dict[int, T]:
        """The clients that vanish in round `round_index`, and at which stage."""
        if self.dropout_rate == 0:
            return {}
        rng = np.random.default_rng([self.seed, round_index])
        out: dict[int, T] = {}
        for cid in client_ids:
            if rng.random() < self.dropout_rate:
                out[cid] = stages[int(rng.integers(len(stages)))]
        return out
