"""Package rules: secagg imports neither core nor dp; modules stay small."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import secagg

PACKAGE = pathlib.Path(secagg.__file__).parent


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


def test_public_surface() -> None:
    for name in secagg.__all__:
        obj = getattr(secagg, name)
        assert obj.__doc__, f"{name} lacks a docstring"


def test_module_doctests() -> None:
    import doctest
    import importlib

    for name in (
        "secagg",
        "secagg.config",
        "secagg.crypto",
        "secagg.identity",
        "secagg.local",
        "secagg.messages",
        "secagg.prg",
        "secagg.quantize",
        "secagg.quantize_torch",
        "secagg.ring",
        "secagg.shamir",
        "secagg.signed_messages",
    ):
        result = doctest.testmod(importlib.import_module(name))
        assert result.attempted > 0 and result.failed == 0, name
