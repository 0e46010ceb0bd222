"""A hardened client's durable record of what it has signed and contributed.

Two facts, each recorded before the message that depends on it leaves the
client, so a crash can only make the client more conservative:

* **session nonces it advertised keys for** (claimed in AdvertiseKeys, before
  the signed advert is returned).  A client signs keys for a nonce at most
  once, so an advert cannot be replayed into another session: the other
  session has another nonce, and the signature covers it.
* **model hashes it contributed a masked input to** (claimed in MaskedInput,
  before the masked vector is returned).  A client contributes at most once
  per model, so a coordinator cannot run {0, 1, 2, 3} and then {1, 2, 3} on
  the same model and subtract.

:class:`FileParticipationLog` keeps one file per fact, created with
``O_CREAT | O_EXCL`` (atomic, and exclusive across processes: two sessions
racing for one model cannot both win), fsync'd with its directory before the
claim returns, so the record survives ``kill -9`` and restarts.
:class:`MemoryParticipationLog` is for simulations that run in one process.

>>> log = MemoryParticipationLog()
>>> log.claim_model(bytes(32))
>>> try:
...     log.claim_model(bytes(32))
... except AlreadyContributed as exc:
...     print(str(exc)[:43])
this client already contributed to model 00
"""

from __future__ import annotations

import abc
import enum
import os
import threading
from pathlib import Path

from secagg.errors import AlreadyContributed, ConfigError, ReplayedSession

__all__ = [
    "FileParticipationLog",
    "MemoryParticipationLog",
    "ParticipationLog",
]

_DIGEST_BYTES = 32


class _Fact(enum.Enum):
    NONCE = "nonce"
    MODEL = "model"


def _hex(value: bytes, what: str) -> str:
    if not isinstance(value, bytes) or len(value) != _DIGEST_BYTES:
        raise ConfigError(f"{what} must be {_DIGEST_BYTES} bytes")
    return value.hex()


def _refusal(fact: _Fact, value: bytes) -> Exception:
    short = value.hex()[:16] + "…"
    if fact is _Fact.MODEL:
        return AlreadyContributed(
            f"this client already contributed to model {short}; it contributes "
            "at most once per model"
        )
    return ReplayedSession(
        f"this client already advertised keys for session nonce {short}; a "
        "session nonce is used once"
    )


class ParticipationLog(abc.ABC):
    """What one institution has signed and contributed, across sessions."""

    def claim_nonce(self, nonce: bytes) -> None:
        """Record ``nonce``; :class:`ReplayedSession` if it was claimed before."""
        self._claim(_Fact.NONCE, nonce, _hex(nonce, "session nonce"))

    def claim_model(self, model_hash: bytes) -> None:
        """Record ``model_hash``; :class:`AlreadyContributed` if claimed before."""
        self._claim(_Fact.MODEL, model_hash, _hex(model_hash, "model hash"))

    def check_model(self, model_hash: bytes) -> None:
        """:class:`AlreadyContributed` if ``model_hash`` was claimed; records
        nothing."""
        if self._has(_Fact.MODEL, _hex(model_hash, "model hash")):
            raise _refusal(_Fact.MODEL, model_hash)

    @abc.abstractmethod
    def _claim(self, fact: _Fact, value: bytes, key: str) -> None: ...

    @abc.abstractmethod
    def _has(self, fact: _Fact, key: str) -> bool: ...


class MemoryParticipationLog(ParticipationLog):
    """In-process record (simulations): lost when the process ends."""

    def __init__(self) -> None:
        self._seen: set[tuple[_Fact, str]] = set()
        self._lock = threading.Lock()

    def _claim(self, fact: _Fact, value: bytes, key: str) -> None:
        with self._lock:
            if (fact, key) in self._seen:
                raise _refusal(fact, value)
            self._seen.add((fact, key))

    def _has(self, fact: _Fact, key: str) -> bool:
        with self._lock:
            return (fact, key) in self._seen


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileParticipationLog(ParticipationLog):
    """Durable record in ``directory``: one fsync'd file per claimed fact.

    The directory is created if missing.  It belongs to one institution; a
    claim made by any process using it binds every other.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        path = Path(directory)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"participation log {path} is not a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot use {path} as a participation log: {exc.strerror}"
            ) from exc
        self._dir = path

    @property
    def directory(self) -> Path:
        """Where the records live."""
        return self._dir

    def _path(self, fact: _Fact, key: str) -> Path:
        return self._dir / f"{fact.value}-{key}"

    def _claim(self, fact: _Fact, value: bytes, key: str) -> None:
        path = self._path(fact, key)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise _refusal(fact, value) from None
        try:
            os.write(fd, f"{fact.value} {key}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        # The name itself must be durable before anything depending on it
        # leaves the client.
        _fsync_dir(self._dir)

    def _has(self, fact: _Fact, key: str) -> bool:
        return self._path(fact, key).exists()
