"""Every Python snippet in the README runs as shown, from a fresh namespace
(so each public import it shows still works)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT

SNIPPETS = re.findall(
    r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S
)


def test_the_readme_has_snippets() -> None:
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet-{i}" for i in
                                                range(len(SNIPPETS))])
def test_readme_snippet_runs(
    code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # snippets write their run folders here
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
