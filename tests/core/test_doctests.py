"""Every example in core's docstrings (the pilot's included) runs and gives
what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import core

MODULES = sorted(
    ["core"]
    + [m.name for m in pkgutil.walk_packages(core.__path__, prefix="core.")]
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(
        importlib.import_module(name), optionflags=doctest.ELLIPSIS
    )
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
