"""The message inspector itself: it must catch each kind of leak it claims to.

The deployment tests run it over every message of real runs; here each kind
of leak is planted in an otherwise clean log and must be named.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from core.flower.protocol import MESSAGE_TYPE, LedgerHead, Stage, StageReply
from secagg.messages import AdvertiseKeys
from tests.deploy.inspection import LeakError, inspect_log


def _entry(fields: dict[str, object], *, kind: str = "ConfigRecord") -> dict[str, Any]:
    typed: dict[str, dict[str, object]] = {}
    for name, value in fields.items():
        if isinstance(value, bytes):
            typed[name] = {"bytes": base64.b64encode(value).decode()}
        else:
            typed[name] = {type(value).__name__: value}
    return {
        "direction": "reply",
        "message_type": MESSAGE_TYPE,
        "src": 1,
        "dst": 0,
        "error": None,
        "records": {"fedshield": {"kind": kind, "fields": typed}},
    }


def _clean_reply() -> dict[str, object]:
    advert = AdvertiseKeys(sender=2, c_pk=bytes(range(32)), s_pk=bytes(32)).to_bytes()
    reply = StageReply(
        stage=Stage.TRAIN,
        round_index=1,
        institution=2,
        payload=advert,
        ledger=LedgerHead(entries=1, sha256="a" * 64),
    )
    return dict(reply.to_fields())


def _write(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def test_a_clean_reply_passes(tmp_path: Path) -> None:
    seen = inspect_log(_write(tmp_path, _entry(_clean_reply())), [112], [b"k" * 32])
    assert seen.replies == 1 and seen.stages == {"train"}


@pytest.mark.parametrize(
    ("plant", "message"),
    [
        (lambda f: f.update(payload=b"\x00" * 64), "not a secagg train message"),
        (lambda f: f.update(train_loss=0.25), "fields"),
        (lambda f: f.update(institution=112), "equals an example count"),
        (lambda f: f.update(payload=f["payload"] + b"k" * 32), "not a secagg"),
    ],
    ids=["float-update-as-bytes", "metric", "example-count", "appended-secret"],
)
def test_each_leak_is_named(tmp_path: Path, plant, message: str) -> None:
    fields = _clean_reply()
    plant(fields)
    with pytest.raises(LeakError, match=message):
        inspect_log(_write(tmp_path, _entry(fields)), [112], [b"k" * 32])


def test_a_float_field_or_another_record_kind_is_refused(tmp_path: Path) -> None:
    entry = _entry(_clean_reply())
    entry["records"]["fedshield"]["fields"]["round"] = {"float": 1.0}
    with pytest.raises(LeakError, match="is a float"):
        inspect_log(_write(tmp_path, entry), [112], [])
    other = _entry(_clean_reply(), kind="ArrayRecord")
    with pytest.raises(LeakError, match="records"):
        inspect_log(_write(tmp_path, other), [112], [])


def test_a_secret_key_inside_a_valid_message_is_named(tmp_path: Path) -> None:
    secret = bytes(range(32))  # the c_pk field of the clean reply, as a "secret"
    with pytest.raises(LeakError, match="secret key"):
        inspect_log(_write(tmp_path, _entry(_clean_reply())), [112], [secret])
