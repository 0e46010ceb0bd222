"""Inspect what crossed the network: every message the coordinator pushed to,
or pulled from, the SuperLink (its message log), field by field.

:func:`inspect_log` raises :class:`LeakError` naming the first message that holds
anything but this app's exact fields: a float (an update or a metric), an
integer equal to an institution's example count, a record of another kind
(ArrayRecord, MetricRecord), a reply payload that is not the ``secagg``
message of its stage, or any institution's identity key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.flower.protocol import MESSAGE_TYPE, RECORD, reply_fields, request_fields
from secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    ShareKeys,
    UnmaskResponse,
)
from secagg.signed_messages import ConsistencySignature, SignedAdvertiseKeys

_DECODERS: dict[str, tuple[Any, ...]] = {
    "train": (AdvertiseKeys, SignedAdvertiseKeys),
    "share-keys": (ShareKeys,),
    "masked-input": (MaskedInput,),
    "consistency-check": (ConsistencySignature,),
    "unmasking": (UnmaskResponse,),
}


class LeakError(AssertionError):
    """A message holds something it must not."""


@dataclass
class Inspected:
    requests: int = 0
    replies: int = 0
    stages: set[str] = field(default_factory=set)
    masked_lengths: set[int] = field(default_factory=set)


def _decode(stage: str, payload: bytes) -> object:
    for kind in _DECODERS[stage]:
        try:
            return kind.from_bytes(payload)
        except Exception:
            continue
    raise LeakError(f"{stage} reply payload is not a secagg {stage} message")


def inspect_log(
    path: Path, counts: Iterable[int], secrets: Iterable[bytes]
) -> Inspected:
    """Check every logged message; :class:`LeakError` at the first bad one."""
    counts, secrets = set(counts), list(secrets)
    seen = Inspected()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        entry = json.loads(line)
        where = f"{path.name}:{number} ({entry['direction']})"
        if entry["message_type"] != MESSAGE_TYPE:
            raise LeakError(f"{where}: message type {entry['message_type']!r}")
        if entry["error"] is not None:
            if entry["records"]:
                raise LeakError(f"{where}: an error reply with content")
            continue
        if set(entry["records"]) != {RECORD} or (
            entry["records"][RECORD]["kind"] != "ConfigRecord"
        ):
            raise LeakError(f"{where}: records {entry['records']!r}")
        fields = entry["records"][RECORD]["fields"]
        reply = entry["direction"] == "reply"
        wanted = reply_fields() if reply else request_fields()
        if set(fields) != wanted:
            raise LeakError(f"{where}: fields {sorted(fields)}")
        values: dict[str, Any] = {}
        for name, typed in fields.items():
            ((kind, value),) = typed.items()
            if kind not in {"int", "str", "bytes"}:
                raise LeakError(f"{where}: field {name!r} is a {kind}")
            values[name] = base64.b64decode(value) if kind == "bytes" else value
        if reply:
            seen.replies += 1
            for name in ("round", "institution", "ledger-entries"):
                if values[name] in counts:
                    raise LeakError(f"{where}: {name} equals an example count")
            stage, payload = values["stage"], values["payload"]
            message = _decode(stage, payload)
            if isinstance(message, MaskedInput):
                seen.masked_lengths.add(int(message.length))
            if any(s in payload for s in secrets):
                raise LeakError(f"{where}: payload holds a secret key")
            seen.stages.add(stage)
        else:
            seen.requests += 1
    return seen
