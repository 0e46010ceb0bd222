"""Where a pilot's privacy ledgers live: per institution, across runs.

A ledger records what an institution has spent; it belongs to the
institution, not to one run. A pilot's ledgers therefore live in
``[privacy] ledger_dir`` (default ``ledgers/<run.name>``, relative to where
``fedshield run`` is started), never inside a run folder, and every run of
the same pilot continues them.

>>> from core.pilot.schema import parse_config
>>> ledger_dir(parse_config({"run": {"name": "Arizona hospitals/2026"}}))
PosixPath('ledgers/Arizona-hospitals-2026')
"""

from __future__ import annotations

import re
from pathlib import Path

from core.pilot.schema import PilotConfig

__all__ = ["ledger_dir"]


def ledger_dir(cfg: PilotConfig) -> Path:
    """The folder of this pilot's ledgers (see the module docstring)."""
    if cfg.privacy.ledger_dir:
        return Path(cfg.privacy.ledger_dir)
    # The run's name as one safe path component.
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", cfg.run.name).strip("-.") or "pilot"
    return Path("ledgers") / name
