"""Where a pilot keeps its ledgers, and the coordinator's heads file: durable,
replaced atomically, read back exactly, refused with one line when broken."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import dp
from core.errors import ConfigError
from core.pilot.ledgers import heads_path, ledger_dir, read_heads, write_heads
from core.pilot.schema import parse_config

HEAD_A = dp.LedgerHead(3, "a" * 64)
HEAD_B = dp.LedgerHead(7, "b" * 64)


def test_the_ledger_folder_is_per_pilot_and_outside_any_run_folder() -> None:
    cfg = parse_config({"run": {"name": "bank pilot", "output_dir": "runs/x"}})
    assert ledger_dir(cfg) == Path("ledgers/bank-pilot")
    given = parse_config({"privacy": {"ledger_dir": "/srv/ledgers/banks"}})
    assert ledger_dir(given) == Path("/srv/ledgers/banks")
    assert heads_path(Path("/srv/ledgers/banks")).name == "banks.heads.json"


def test_heads_round_trip_and_dp_reads_them_as_recorded_heads(tmp_path: Path) -> None:
    path = tmp_path / "p.heads.json"
    assert read_heads(path) == {}  # a pilot's first run
    write_heads(path, {"client-0": HEAD_A, "client-1": HEAD_B})
    assert read_heads(path) == {"client-0": HEAD_A, "client-1": HEAD_B}
    recorded = dp.read_recorded_heads(path)
    assert recorded == {"client-0": (HEAD_A,), "client-1": (HEAD_B,)}


def test_a_failed_write_leaves_the_previous_heads_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.heads.json"
    write_heads(path, {"client-0": HEAD_A})
    before = path.read_bytes()

    def torn(obj: Any, handle: Any, **kwargs: Any) -> None:
        handle.write('{"ledger_heads": {"client-0": {"seq": 9')
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", torn)
    with pytest.raises(OSError, match="disk full"):
        write_heads(path, {"client-0": HEAD_B})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.heads.json"]  # no temp file


@pytest.mark.parametrize(
    "text",
    ["{not json\n", '{"other": 1}\n', '{"ledger_heads": {"client-0": {"seq": 1}}}\n'],
    ids=["not-json", "no-heads", "bad-head"],
)
def test_an_unreadable_heads_file_is_a_config_error_naming_it(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "p.heads.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_heads(path)
    message = str(caught.value)
    assert message.startswith(
        f"privacy.ledger_dir: the coordinator's heads file {path} cannot be read ("
    )
    assert message.endswith("never delete it") and "\n" not in message
