"""The exception tree of the FedAvg core.

Every error the core raises on purpose derives from `FederationError`, so a
caller can catch the whole family in one place; leaves that describe a bad
value also derive from `ValueError` so generic handlers still see them.
"""

from __future__ import annotations

__all__ = [
    "CheckpointMismatchError",
    "ConfigError",
    "DataError",
    "FederationError",
    "InvalidUpdateError",
    "ParamSpecError",
    "PartitionError",
    "RoundAborted",
]


class FederationError(Exception):
    """Base class of every error raised on purpose by `core`."""


class ConfigError(FederationError, ValueError):
    """A configuration field or constructor argument has a wrong type or value.

    The message names the field, the allowed values and the value found, so a
    user can fix a config file without reading the source.
    """


class ParamSpecError(FederationError, ValueError):
    """A state dict or flat vector does not match the `ParamSpec` it is used with.

    Loading parameters of one model into another would silently corrupt it, so
    names, shapes, dtypes and lengths are all checked.
    """


class CheckpointMismatchError(FederationError, ValueError):
    """A checkpoint (or a component's saved state) belongs to something else.

    Raised for another model, another format version, or a component state
    that the component receiving it never wrote.
    """


class PartitionError(FederationError, ValueError):
    """A partitioner cannot meet its constraints (e.g. `min_partition_size`)."""


class DataError(FederationError, ValueError):
    """A client's examples are malformed (features and labels disagree) or
    missing where some are needed (training or evaluating on no rows)."""


class InvalidUpdateError(FederationError, ValueError):
    """An update, a weight or an aggregate is malformed: a delta that is not a
    flat vector, a negative example count, weights that do not match the
    updates or sum to zero."""


class RoundAborted(FederationError):  # noqa: N818 - an event, not a bug
    """An aggregator gave up on a round; the global model stays unchanged.

    Secure aggregation raises it (or a subclass) when fewer than the threshold
    of clients survive. The federation loop logs the reason and carries on with
    the next round, so raising it is never fatal to a run.
    """
