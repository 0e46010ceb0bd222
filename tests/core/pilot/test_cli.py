"""The fedshield CLI: subcommands are handed on lazily, so help is instant."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from core.pilot.cli import main

ROOT = Path(__file__).resolve().parents[3]


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


def _run_cli_and_list_modules(argv: list[str]) -> tuple[str, set[str]]:
    """Run `python -m core.pilot.cli ARGV` as a user would: its output, and
    every module it had loaded when it finished."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['fedshield', *{argv!r}]\n"
        "try:\n"
        "    runpy.run_module('core.pilot.cli', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout, set(done.stderr.split())


_HEAVY = ("torch", "opacus", "numpy", "dp", "secagg")


@pytest.mark.parametrize(
    "argv", [["--help"], ["run", "--help"], ["init", "--help"], ["--version"]]
)
def test_help_answers_without_importing_torch_or_the_libraries(
    argv: list[str],
) -> None:
    stdout, loaded = _run_cli_and_list_modules(argv)
    heavy = sorted(m for m in loaded if m.split(".")[0] in _HEAVY)
    assert not heavy, f"{argv} imported {heavy[:5]}"
    assert "usage: fedshield" in stdout or "fedshield " in stdout


def test_dry_run_validates_without_importing_torch_or_opacus() -> None:
    # Validation builds dp.DPConfig and secagg.SecAggSettings, and neither may
    # need torch or Opacus for it (they load only to train).
    stdout, loaded = _run_cli_and_list_modules(
        ["run", "examples/hospital_pilot.toml", "--dry-run"]
    )
    assert "valid; resolved" in stdout
    heavy = sorted(m for m in loaded if m.split(".")[0] in {"torch", "opacus"})
    assert not heavy, f"--dry-run imported {heavy[:5]}"
