"""The fedshield CLI: the audit subcommand is handed to dp lazily."""

from __future__ import annotations

import sys
import types

import pytest

from core.pilot.cli import main


def test_audit_without_dp_cli_says_so_and_returns_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "dp.cli", None)  # makes the import fail
    assert main(["audit", "ledger.jsonl"]) == 2
    assert "dp.cli is not available" in capsys.readouterr().err


def test_audit_passes_the_remaining_argv_on(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def audit_main(argv: list[str]) -> int:
        seen.append(argv)
        return 3

    fake = types.ModuleType("dp.cli")
    fake.audit_main = audit_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dp.cli", fake)
    assert main(["audit", "runs/ledger", "--plot", "eps.png", "--help"]) == 3
    assert seen == [["runs/ledger", "--plot", "eps.png", "--help"]]


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (None, 0), (2, 2), ("bad", 2)])
def test_audit_exits_become_return_codes(
    monkeypatch: pytest.MonkeyPatch, code: int | str | None, expected: int
) -> None:
    def audit_main(argv: list[str]) -> int:
        raise SystemExit(code)

    fake = types.ModuleType("dp.cli")
    fake.audit_main = audit_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dp.cli", fake)
    assert main(["audit", "--help"]) == expected


def test_audit_without_audit_main_returns_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "dp.cli", types.ModuleType("dp.cli"))
    assert main(["audit"]) == 2
    assert "dp.cli has no audit_main" in capsys.readouterr().err


def test_no_command_or_an_unknown_one_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    assert "usage: fedshield" in capsys.readouterr().err
    assert main(["bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("fedshield ")
