"""The dependency rules between the packages, and the size house rules.

`secagg` and `dp` are leaves: neither imports `core`, nor the other. Inside
`core`, the FedAvg library (every module at the top of `core/`) imports
neither the pilot application (`core.pilot`) nor `dp` nor `secagg`; only the
two adapters may reach one leaf each (`core.dp_trainer` → `dp`,
`core.secure_aggregator` → `secagg`), and only the applications (`core.pilot`
and the Flower apps in `core.flower`) may use all of
them. Imports are read from the source with `ast`, so a forbidden import is
caught even in a branch that never runs (a lazy import inside a function
counts too).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400
MAX_FUNCTION_LINES = 60
# Modules whose every function must stay short; the rest of core is held to
# the same limit below.
SHORT_FUNCTION_FILES = ("secagg/client.py", "secagg/server.py", "dp/client.py")


@dataclass(frozen=True, slots=True)
class Rule:
    """Modules matching `scope` may not import anything under `forbidden`."""

    scope: str
    forbidden: tuple[str, ...]
    exempt: tuple[str, ...] = ()

    def applies_to(self, module: str) -> bool:
        if any(_under(module, e) for e in self.exempt):
            return False
        return _under(module, self.scope)


RULES = (
    Rule("secagg", ("core", "dp")),
    Rule("dp", ("core", "secagg")),
    Rule(
        "core",
        ("core.pilot", "core.flower", "dp", "secagg"),
        exempt=(
            "core.pilot", "core.flower", "core.dp_trainer", "core.secure_aggregator",
        ),
    ),
    Rule("core.dp_trainer", ("core.pilot", "secagg")),
    Rule("core.secure_aggregator", ("core.pilot", "dp")),
)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    """Dotted name of the module at `path` (a package's `__init__` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module (dotted, relative ones resolved) that `source` imports.

    ``from a import b`` yields both ``a`` and ``a.b`` (b may be a submodule),
    and constant-string `importlib.import_module` / `__import__` calls count.
    """
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", ""))
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def _modules(root: Path) -> Iterator[tuple[str, Path]]:
    for package in ("core", "dp", "secagg"):
        for path in sorted((root / package).rglob("*.py")):
            yield module_name(path, root), path


def violations(root: Path) -> dict[str, list[str]]:
    """``{module: [forbidden imports]}`` for every module of the tree at `root`."""
    found: dict[str, list[str]] = {}
    for module, path in _modules(root):
        imported = imported_names(
            path.read_text(encoding="utf-8"),
            module,
            is_package=path.name == "__init__.py",
        )
        bad = sorted(
            name
            for rule in RULES
            if rule.applies_to(module)
            for name in imported
            if any(_under(name, f) for f in rule.forbidden)
        )
        if bad:
            found[module] = bad
    return found


def test_the_tree_keeps_every_dependency_rule() -> None:
    assert violations(ROOT) == {}


def _fake_tree(root: Path, files: dict[str, str]) -> Path:
    for package in ("core", "core/pilot", "dp", "secagg"):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    for name, source in files.items():
        (root / name).write_text(source)
    return root


ALLOWED = {
    "core/federation.py": "from core.params import ParamSpec\nimport torch\n",
    "core/dp_trainer.py": "import dp\nfrom core.interfaces import Trainer\n",
    "core/secure_aggregator.py": "import secagg\n",
    "core/pilot/runner.py": "import dp\nimport secagg\nfrom core import federation\n",
    "dp/client.py": "from dp.config import DPConfig\n",
    "secagg/client.py": "from . import ring\n",
}


def test_a_clean_fixture_tree_passes(tmp_path: Path) -> None:
    # The allowed imports of every kind of module: the rules do not over-reach.
    assert violations(_fake_tree(tmp_path, ALLOWED)) == {}


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("core/federation.py", "import dp\n", {"core.federation": ["dp"]}),
        (
            "core/trainer.py",
            "def f():\n    from secagg.ring import add\n",
            {"core.trainer": ["secagg.ring", "secagg.ring.add"]},
        ),
        (
            "core/reporting.py",
            "from core.pilot.schema import PilotConfig\n",
            {"core.reporting": ["core.pilot.schema", "core.pilot.schema.PilotConfig"]},
        ),
        ("core/params.py", "from core import pilot\n", {"core.params": ["core.pilot"]}),
        (
            "core/__init__.py",
            "import importlib\nimportlib.import_module('secagg')\n",
            {"core": ["secagg"]},
        ),
        (
            "core/dp_trainer.py",
            "import secagg\n",
            {"core.dp_trainer": ["secagg"]},
        ),
        (
            "core/secure_aggregator.py",
            "from ..dp import config\n",
            {"core.secure_aggregator": ["dp", "dp.config"]},
        ),
        ("dp/noise.py", "import core.params\n", {"dp.noise": ["core.params"]}),
        ("secagg/ring.py", "__import__('dp')\n", {"secagg.ring": ["dp"]}),
    ],
    ids=[
        "library-imports-dp",
        "library-lazy-imports-secagg",
        "library-imports-the-application",
        "library-imports-the-application-by-name",
        "package-init-imports-secagg-dynamically",
        "dp-adapter-imports-secagg",
        "secagg-adapter-imports-dp-relatively",
        "dp-imports-core",
        "secagg-imports-dp",
    ],
)
def test_a_forbidden_import_in_a_fixture_tree_is_reported(
    tmp_path: Path, path: str, source: str, expected: dict[str, list[str]]
) -> None:
    root = _fake_tree(tmp_path, {**ALLOWED, path: source})
    assert violations(root) == expected


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import core", "secagg.x", {"core"}),
        ("import core.params as p", "secagg.x", {"core.params"}),
        ("from core.errors import X", "secagg.x", {"core.errors", "core.errors.X"}),
        ("def f():\n    from dp import cli", "secagg.x", {"dp", "dp.cli"}),
        (
            "import importlib\nimportlib.import_module('core.cli')",
            "secagg.x",
            {"importlib", "core.cli"},
        ),
        ("__import__('secagg')", "dp.x", {"secagg"}),
        ("from . import ring", "secagg.client", {"secagg", "secagg.ring"}),
        ("from .. import data", "core.pilot.runner", {"core", "core.data"}),
        ("from .schema import P", "core.pilot.runner", {"core.pilot.schema",
                                                       "core.pilot.schema.P"}),
    ],
)
def test_import_scanner_sees_every_form(
    source: str, module: str, expected: set[str]
) -> None:
    # The rules are only as good as the scanner: each import form must be seen.
    assert imported_names(source, module) == expected


@pytest.mark.parametrize("package", ["core", "dp", "secagg"])
def test_modules_are_under_the_size_limit(package: str) -> None:
    too_long = {
        str(path.relative_to(ROOT)): n
        for path in sorted((ROOT / package).rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) >= MAX_LINES
    }
    assert not too_long, f"modules must be under {MAX_LINES} lines: {too_long}"


def long_functions(source: str) -> dict[str, int]:
    """``{qualified name: lines}`` of every function longer than the limit."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found[name] = lines
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(source), "")
    return found


def test_long_function_finder_counts_nested_and_methods() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = f"class A:\n  def m(self):\n{body}\ndef short():\n    return 1\n"
    assert long_functions(source) == {"A.m": MAX_FUNCTION_LINES + 1}


@pytest.mark.parametrize(
    "path",
    [
        *SHORT_FUNCTION_FILES,
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "core").rglob("*.py")),
    ],
)
def test_functions_are_short(path: str) -> None:
    found = long_functions((ROOT / path).read_text(encoding="utf-8"))
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines in {path}: {found}"


def _imported_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(done.stdout.split())


def test_importing_core_loads_neither_torch_nor_the_leaves() -> None:
    loaded = _imported_after("import core")
    assert not loaded & {"torch", "opacus", "dp", "secagg", "core.pilot"}


def test_the_adapters_load_on_first_use() -> None:
    loaded = _imported_after(
        "from core import DPTrainer, SecureAggregator\n"
        "assert DPTrainer.__module__ == 'core.dp_trainer'\n"
        "assert SecureAggregator.__module__ == 'core.secure_aggregator'"
    )
    # dp and secagg load here; Opacus itself waits until a client trains.
    assert {"dp", "secagg", "torch"} <= loaded
