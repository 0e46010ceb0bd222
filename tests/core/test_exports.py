"""`core`'s public surface: every name in `__all__` loads on first use, from
the module the lazy table names, and type checkers see the same names."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import core

INIT = Path(core.__file__)


def _type_checking_imports() -> set[str]:
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    guarded = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    )
    return {
        alias.asname or alias.name
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_all_the_lazy_table_and_the_type_checking_imports_agree() -> None:
    assert set(core.__all__) == set(core._EXPORTS) == _type_checking_imports()
    assert len(core.__all__) == len(set(core.__all__))


@pytest.mark.parametrize("name", sorted(core.__all__))
def test_every_public_name_loads_from_its_module(name: str) -> None:
    value = getattr(core, name)
    module = importlib.import_module(core._EXPORTS[name])
    assert value is getattr(module, name)
    assert name in dir(core)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'core' has no attribute 'Nope'"):
        _ = core.Nope  # type: ignore[attr-defined]
    # A submodule is still importable by name.
    from core import federation

    assert federation.Federation is core.Federation
