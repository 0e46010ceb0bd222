"""Keyword validators shared by the config dataclasses (package-internal).

One message template everywhere: ``<Owner>.<field> must be <constraint>;
found <value>``, so every bad config names the field and what is allowed.
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

from core.errors import ConfigError

E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")


def check_int(
    owner: str, name: str, value: object, *, minimum: int | None = None
) -> None:
    """Require an `int` (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner}.{name} must be an int; found {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{owner}.{name} must be >= {minimum}; found {value}")


def check_float(
    owner: str,
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Require a finite real number in the interval described by the bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{owner}.{name} must be a number; found {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{owner}.{name} must be finite; found {value}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ConfigError(
            f"{owner}.{name} must be in {left}{lo}, {hi}{right}; found {value}"
        )


def check_enum(owner: str, name: str, value: object, kind: type[E]) -> None:
    """Require a member of `kind`; a string is refused with the allowed values."""
    if not isinstance(value, kind):
        allowed = ", ".join(repr(m.value) for m in kind)
        raise ConfigError(
            f"{owner}.{name} must be an {kind.__name__} member (one of {allowed}); "
            f"found {value!r}"
        )


def coerce_enum(owner: str, name: str, value: object, kind: type[E]) -> E:
    """Turn a member or its value (e.g. from TOML) into a member of `kind`."""
    if isinstance(value, kind):
        return value
    for member in kind:
        if member.value == value:
            return member
    allowed = ", ".join(repr(m.value) for m in kind)
    raise ConfigError(f"{owner}.{name} must be one of {allowed}; found {value!r}")


def from_mapping(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build the frozen config dataclass `cls` from plain values (TOML, JSON).

    Unknown keys are refused with the list of allowed fields, and enum fields
    accept their value (``"sgd"``) as well as the member.
    """
    if not (is_dataclass(cls) and isinstance(cls, type)):
        raise ConfigError(f"{cls!r} is not a config dataclass type")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{cls.__name__} has no field {unknown[0]!r}; allowed fields: "
            + ", ".join(known)
        )
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = known[key].type
        kind = _enum_type(cls, hint)
        kwargs[key] = (
            coerce_enum(cls.__name__, key, value, kind) if kind is not None else value
        )
    return cls(**kwargs)


def _enum_type(cls: type[Any], hint: object) -> type[enum.Enum] | None:
    # Field types are strings under `from __future__ import annotations`;
    # resolve them in the module that defines the dataclass.
    module = sys.modules[cls.__module__]
    resolved = getattr(module, hint, None) if isinstance(hint, str) else hint
    if isinstance(resolved, type) and issubclass(resolved, enum.Enum):
        return resolved
    return None
