"""The README's secure-aggregation example runs as written."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import torch

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _secagg_example() -> str:
    text = README.read_text()
    section = text[text.index("## The library in a few lines") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README lost its secagg example"
    return match.group(1)


def test_readme_secagg_example_runs_and_sums_exactly() -> None:
    code = _secagg_example()
    assert "import secagg" in code
    scope: dict[str, Any] = {}
    exec(compile(code, str(README), "exec"), scope)  # the repository's own README
    res, counts, updates = scope["res"], scope["counts"], scope["updates"]
    assert scope["cfg"].threshold == 14
    assert res.total_weight == sum(counts)  # 5 vanished after MaskedInput
    exact = sum(w * u.double() for w, u in zip(counts, updates, strict=True))
    assert torch.allclose(
        res.weighted_sum, exact, atol=sum(counts) / scope["cfg"].scale
    )
