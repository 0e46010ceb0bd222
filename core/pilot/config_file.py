"""Pilot config files: TOML tables in, `PilotConfig` out, and back to TOML.

`load_config` reads a file (a relative ``data.path`` is made relative to the
file's folder), applies command-line ``--set``/``--unset`` overrides to the
raw tables, and validates the result once (`core.pilot.schema.parse_config`),
so related keys can change together. `to_toml` writes a config back with
every key of the schema and its help text: set values as ``key = value``,
unset ones as comments. `init_template` is `to_toml` of the defaults, so the
template can never drift from the schema.

>>> from core.pilot.schema import parse_config
>>> cfg = parse_config({"federation": {"rounds": 3}})
>>> to_tables(cfg)["federation"]["rounds"]
3
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.pilot.schema import KEYS, KeyDoc, PilotConfig, parse_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "apply_overrides",
    "init_template",
    "load_config",
    "read_tables",
    "to_tables",
    "to_toml",
]

Tables = dict[str, dict[str, Any]]
_HELP_COLUMN = 32


def read_tables(path: str | Path) -> Tables:
    """The raw tables of a TOML file; a relative ``data.path`` becomes
    relative to the file's folder."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(source)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(
            f"config file {str(source)!r} cannot be read: {exc}"
        ) from None
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    data = tables.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str) and data["path"]:
        csv = Path(data["path"])
        if not csv.is_absolute():
            data["path"] = str((source.parent / csv).resolve())
    return tables


def _target(text: str, given: str, *, assignment: bool) -> tuple[str, str]:
    name, dot, key = text.strip().partition(".")
    if not (dot and name and key):
        usage = (
            "--set needs TABLE.KEY=VALUE (e.g. federation.rounds=3)"
            if assignment
            else "--unset needs TABLE.KEY (e.g. privacy.target_epsilon)"
        )
        raise ConfigError(f"{usage}; found {given!r}")
    return name, key


def apply_overrides(
    tables: Mapping[str, Mapping[str, Any]],
    assignments: Iterable[str] = (),
    removals: Iterable[str] = (),
) -> Tables:
    """`tables` with ``TABLE.KEY`` removed (`removals`) and ``TABLE.KEY=VALUE``
    set (`assignments`; VALUE in TOML syntax, a bare word is a string).

    Unknown names are left for `parse_config` to refuse with a suggestion.
    """
    out = {name: dict(body) for name, body in tables.items()}
    for text in removals:
        name, key = _target(text, text, assignment=False)
        out.get(name, {}).pop(key, None)
    for assignment in assignments:
        target, sep, raw = assignment.partition("=")
        name, key = _target(target if sep else "", assignment, assignment=True)
        try:
            value = tomllib.loads(f"x = {raw.strip()}")["x"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out.setdefault(name, {})[key] = value
    return out


def load_config(
    path: str | Path, assignments: Iterable[str] = (), removals: Iterable[str] = ()
) -> PilotConfig:
    """Read, override and validate a pilot config file."""
    return parse_config(apply_overrides(read_tables(path), assignments, removals))


def _value(cfg: PilotConfig, key: KeyDoc) -> Any:
    """The key's value in `cfg`, or None where it is not set (or its table
    is switched off)."""
    section = cfg.secure_aggregation
    derived = {"max_weight": section.max_weight_from_data,
               "clip": section.clip_from_privacy}  # fmt: skip
    if key.path[:2] == ("secure_aggregation", "settings") and derived.get(
        key.path[-1], False
    ):
        return None
    value: Any = cfg
    for name in key.path:
        if value is None:
            return None
        value = getattr(value, name)
    if isinstance(value, enum.Enum):
        return value.value
    return list(value) if isinstance(value, tuple) else value


def to_tables(cfg: PilotConfig) -> Tables:
    """The config as TOML-ready tables of plain values (unset keys left out)."""
    return {
        table: {
            key.name: value for key in keys if (value := _value(cfg, key)) is not None
        }
        for table, keys in KEYS.items()
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(x) for x in value) + "]"
    # A JSON string literal is a valid TOML basic string for printable text.
    return json.dumps(str(value), ensure_ascii=False)


def to_toml(cfg: PilotConfig, *, header: str = "") -> str:
    """Every key of the schema with its help: set values as ``key = value``,
    unset ones as comments. `load_config` reads it back to an equal config."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for table, keys in KEYS.items():
        lines.append(f"\n[{table}]")
        for key in keys:
            value = _value(cfg, key)
            text = (
                f"# {key.name}: not set"
                if value is None
                else f"{key.name} = {_toml_value(value)}"
            )
            lines.append(f"{text.ljust(_HELP_COLUMN - 1)} # {key.help}")
    return "\n".join(lines).lstrip("\n") + "\n"


def init_template(path: str | Path) -> str:
    """The commented example config ``fedshield init`` writes: the defaults."""
    header = (
        f"fedshield pilot config. Run it with:  fedshield run {path}\n"
        "Every key is optional; the values below are the defaults."
    )
    return to_toml(parse_config({}), header=header)
