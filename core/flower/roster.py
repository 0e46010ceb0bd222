"""Consortium roster and identity keys, provisioned as files out of band.

Each institution holds a long-term Ed25519 identity key (PKCS#8 PEM, mode
0600, never copied off its machine).  The roster lists every member's
consortium id, name and raw public identity key, and reaches every
institution and the coordinator out of band (signed e-mail, the
consortium's document store), never through the SuperLink, so the
coordinator can neither add a member nor swap a key::

    {"version": 1, "members": [{"id": 0, "name": "hospital-a",
                                "ed25519": "<64 hex digits>"}, ...]}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import secagg
from core.flower.errors import DeploymentConfigError

__all__ = [
    "ROSTER_VERSION",
    "Roster",
    "load_identity_key",
    "load_roster",
    "write_identity_key",
    "write_roster",
]

ROSTER_VERSION = 1


@dataclass(frozen=True, slots=True)
class Roster:
    """The consortium registry and each member's name."""

    consortium: secagg.Consortium
    names: Mapping[int, str]


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_identity_key(path: str | Path, key: Ed25519PrivateKey) -> None:
    """Write an identity key as unencrypted PKCS#8 PEM readable by its owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _atomic_write(Path(path), pem, 0o600)


def load_identity_key(path: str | Path) -> Ed25519PrivateKey:
    """Read an institution's Ed25519 identity key."""
    source = Path(path)
    try:
        key = serialization.load_pem_private_key(source.read_bytes(), password=None)
    except FileNotFoundError:
        raise DeploymentConfigError(
            f"identity key {str(source)!r} does not exist"
        ) from None
    except (ValueError, TypeError) as exc:
        raise DeploymentConfigError(
            f"identity key {str(source)!r} is not an unencrypted PEM key: {exc}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise DeploymentConfigError(
            f"identity key {str(source)!r} must be an Ed25519 key; found "
            f"{type(key).__name__}"
        )
    return key


def write_roster(path: str | Path, members: Mapping[int, tuple[str, bytes]]) -> None:
    """Write the roster: ``{id: (name, raw Ed25519 public key)}``."""
    body = {
        "version": ROSTER_VERSION,
        "members": [
            {"id": i, "name": name, "ed25519": key.hex()}
            for i, (name, key) in sorted(members.items())
        ],
    }
    text = json.dumps(body, indent=2) + "\n"
    _atomic_write(Path(path), text.encode("utf-8"), 0o644)


def load_roster(path: str | Path) -> Roster:
    """Read and check a roster file; one-line error naming what is wrong."""
    source = Path(path)
    try:
        body = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeploymentConfigError(f"roster {str(source)!r} does not exist") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DeploymentConfigError(
            f"roster {str(source)!r}: not JSON: {exc}"
        ) from None
    if not isinstance(body, dict) or body.get("version") != ROSTER_VERSION:
        raise DeploymentConfigError(
            f"roster {str(source)!r} must be an object with version {ROSTER_VERSION}"
        )
    members = body.get("members")
    if not isinstance(members, list) or not members:
        raise DeploymentConfigError(f"roster {str(source)!r} lists no members")
    keys: dict[int, bytes] = {}
    names: dict[int, str] = {}
    for m in members:
        ok = (
            isinstance(m, dict)
            and set(m) == {"id", "name", "ed25519"}
            and isinstance(m["id"], int)
            and not isinstance(m["id"], bool)
            and isinstance(m["name"], str)
            and isinstance(m["ed25519"], str)
        )
        if not ok:
            raise DeploymentConfigError(
                f"roster {str(source)!r}: each member must be "
                '{"id": int, "name": str, "ed25519": hex}; found ' + repr(m)
            )
        if m["id"] in keys:
            raise DeploymentConfigError(
                f"roster {str(source)!r} lists id {m['id']} twice"
            )
        try:
            keys[m["id"]] = bytes.fromhex(m["ed25519"])
        except ValueError:
            raise DeploymentConfigError(
                f"roster {str(source)!r}: key of member {m['id']} is not hex"
            ) from None
        names[m["id"]] = m["name"]
    try:
        consortium = secagg.Consortium.from_keys(keys)
    except secagg.SecAggError as exc:
        raise DeploymentConfigError(f"roster {str(source)!r}: {exc}") from None
    return Roster(consortium=consortium, names=names)
