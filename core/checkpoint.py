"""Durable checkpoints: written atomically, read without unpickling code.

`save_checkpoint` writes to a temporary file in the target's directory,
fsyncs it, renames it over the target with `os.replace` (atomic on POSIX),
then fsyncs the directory so the rename itself survives a crash: a reader
sees either the old checkpoint or the new one, never a torn file.

`load_checkpoint` uses ``torch.load(..., weights_only=True)`` only, so a
checkpoint can hold tensors and plain Python values but can never execute
code when read; a file that needs more is refused.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointMismatchError

__all__ = [
    "CHECKPOINT_VERSION",
    "load_checkpoint",
    "refuse_foreign_state",
    "save_checkpoint",
]

#: Bumped whenever the layout of the federation checkpoint changes.
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write `state` to `path` atomically and durably."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain values)."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointMismatchError(
            f"{path} is not a checkpoint of tensors and plain values only; "
            "refusing to unpickle it"
        ) from exc
    except (RuntimeError, EOFError) as exc:
        detail = str(exc) or "file is truncated"
        raise CheckpointMismatchError(
            f"{path} is not a readable fedshield checkpoint: {detail}"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{path} does not hold a checkpoint dict")
    return state


def refuse_foreign_state(owner: str, state: Mapping[str, Any]) -> None:
    """For a stateless component's `load_state_dict`: a non-empty state was
    written by something else, and is refused rather than ignored."""
    if state:
        raise CheckpointMismatchError(
            f"{owner} has no state; found keys " + ", ".join(sorted(state))
        )


def _fsync_dir(directory: Path) -> None:
    # Without this, the rename may be lost on power failure even though the
    # file's data was synced (POSIX leaves directory entries to the directory).
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    fd = os.open(directory, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
