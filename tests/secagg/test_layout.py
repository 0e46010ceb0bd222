"""Package rules: secagg imports neither core nor dp; modules stay small,
the phase machines' functions short; only secagg's errors are raised; the
docs speak of the code as it is."""

from __future__ import annotations

import ast
import doctest
import importlib
import pathlib
import pkgutil
import re
import subprocess
import sys

import pytest

import secagg

PACKAGE = pathlib.Path(secagg.__file__).parent
TESTS = pathlib.Path(__file__).parent
MODULES = sorted(f"secagg.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE)]))


def test_secagg_never_imports_core_or_dp() -> None:
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                assert root not in {"core", "dp"}, f"{path.name} imports {name}"


def test_import_pulls_in_neither_core_nor_dp() -> None:
    code = (
        "import sys, secagg, secagg.local\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('core', 'dp')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_modules_are_under_400_lines() -> None:
    for path in PACKAGE.glob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines < 400, f"{path.name} has {lines} lines"


def long_functions(source: str, limit: int = 60) -> list[str]:
    """Names and lengths of the functions in ``source`` over ``limit`` lines."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                out.append(f"{node.name} ({length} lines)")
    return out


@pytest.mark.parametrize("name", ["client.py", "server.py"])
def test_phase_machine_functions_are_at_most_60_lines(name: str) -> None:
    assert long_functions((PACKAGE / name).read_text()) == []


def test_long_function_check_can_fail() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    assert long_functions(f"def f():\n{body}\n") == ["f (61 lines)"]


_FOREIGN = (ValueError, TypeError, RuntimeError, KeyError, IndexError, AssertionError)


def bare_raises(source: str) -> list[str]:
    """Builtin exceptions ``source`` raises by name (not secagg's own)."""
    names = {e.__name__ for e in _FOREIGN} | {"Exception"}
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id in names:
                out.append(f"line {node.lineno}: {exc.id}")
    return out


def test_only_secagg_errors_are_raised() -> None:
    for path in PACKAGE.glob("*.py"):
        assert bare_raises(path.read_text()) == [], path.name
    assert bare_raises("raise ValueError('x')\n") == ["line 1: ValueError"]


_OUTSIDE = re.compile(r"DESIGN|\bnotes?\b|[Ii]ssue \d|\bissue\b")


@pytest.mark.parametrize("root", [PACKAGE, TESTS])
def test_docs_speak_only_of_the_repository(root: pathlib.Path) -> None:
    for path in root.glob("*.py"):
        if path.name == "test_layout.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not _OUTSIDE.search(line), f"{path.name}:{n}: {line.strip()}"


def test_public_surface() -> None:
    for name in secagg.__all__:
        obj = getattr(secagg, name)
        assert obj.__doc__, f"{name} lacks a docstring"


@pytest.mark.parametrize("name", ["secagg", *MODULES])
def test_module_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0, name


def test_doctests_exist() -> None:
    tried = sum(doctest.testmod(importlib.import_module(m)).attempted for m in MODULES)
    assert tried >= 30
