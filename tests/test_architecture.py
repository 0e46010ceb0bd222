"""The dependency rule of DESIGN.md §1 and the module-size house rule.

`secagg` and `dp` are leaves: neither imports `core`, nor the other. Imports
are read from the source with `ast`, so a forbidden import is caught even in
a branch that never runs (a lazy import inside a function counts too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400
FORBIDDEN = {"secagg": {"core", "dp"}, "dp": {"core", "secagg"}}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_roots(source: str, module_package: str) -> set[str]:
    """Top-level package of every import in `source` (relative ones resolved)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside the module's own package
                roots.add(module_package)
            elif node.module:
                roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", ""))
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_leaf_packages_do_not_import_core_or_each_other(package: str) -> None:
    modules = _modules(package)
    assert modules, f"{package}/ has no modules to check"
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            imported_roots(path.read_text(encoding="utf-8"), package)
            & FORBIDDEN[package]
        )
        for path in modules
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package} must stay a leaf; forbidden imports: {offenders}"


@pytest.mark.parametrize("package", ["core", "dp", "secagg"])
def test_modules_are_under_the_size_limit(package: str) -> None:
    too_long = {
        str(path.relative_to(ROOT)): n
        for path in _modules(package)
        if (n := len(path.read_text(encoding="utf-8").splitlines())) >= MAX_LINES
    }
    assert not too_long, f"modules must be under {MAX_LINES} lines: {too_long}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import core", {"core"}),
        ("import core.params as p", {"core"}),
        ("from core.errors import X", {"core"}),
        ("def f():\n    from dp import cli", {"dp"}),
        (
            "import importlib\nimportlib.import_module('core.cli')",
            {"importlib", "core"},
        ),
        ("__import__('secagg')", {"secagg"}),
        ("from . import ring", {"secagg"}),
    ],
)
def test_import_scanner_sees_every_form(source: str, expected: set[str]) -> None:
    # The rule is only as good as the scanner: each import form must be seen.
    assert imported_roots(source, "secagg") == expected
