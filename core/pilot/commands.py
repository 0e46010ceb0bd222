"""``fedshield run CONFIG.toml`` and ``fedshield init [PATH]``.

Two self-contained argparse entry points, `run_main(argv)` and
`init_main(argv)`, each returning the exit status (0 success, 1 an
unexpected failure, 2 bad input: a one-line ``fedshield run: error: ...`` on
stderr). Heavy modules (torch, Opacus, the libraries) are imported only once
the arguments are parsed, so ``--help`` answers at once.

Output modes of ``run``: by default a progress bar over rounds (tqdm, on a
terminal) with the latest test accuracy and ε, a line per round, and a final
summary; ``--quiet`` prints only the summary; ``--json`` prints JSON lines
only on stdout (one per round, messages, and a final ``"summary"`` line);
``--dry-run`` validates the config and prints it resolved, running nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["init_main", "run_main"]


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedshield run",
        description="Run a federated pilot described by a TOML config: DP-SGD "
        "per institution and secure aggregation (both on by default), a "
        "centralised non-private baseline, and a run folder with metrics, "
        "privacy ledgers, the final model, plots and report.md. "
        "`fedshield init` writes a commented example config.",
        epilog="The run folder is built as OUTPUT.partial and renamed to OUTPUT "
        "once report.md (written last) exists; on any error it is removed, so "
        "a folder without .partial is always a complete run. An existing OUTPUT "
        "is never replaced: the run goes to OUTPUT-2, OUTPUT-3, ... and says so. "
        "The privacy ledgers live outside run folders, in privacy.ledger_dir, "
        "and every run continues them. Exit status: 0 done, 2 bad config or "
        "data (one line on stderr), 1 unexpected failure.",
    )
    p.add_argument("config", type=Path, help="the pilot's TOML config")
    p.add_argument(
        "--output", metavar="DIR", help="run folder (overrides run.output_dir)"
    )
    overrides = (
        ("--set", "overrides", "TABLE.KEY=VALUE",
         "override one config value, e.g. federation.rounds=3 (repeatable; "
         "VALUE in TOML syntax)"),
        ("--unset", "removals", "TABLE.KEY",
         "remove a key of the file, back to its default, e.g. "
         "privacy.target_epsilon (repeatable)"),
    )  # fmt: skip
    for flag, dest, metavar, text in overrides:
        p.add_argument(
            flag, dest=dest, action="append", default=[], metavar=metavar, help=text
        )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quiet", action="store_true", help="print only the final summary"
    )
    mode.add_argument(
        "--json",
        action="store_true",
        help="JSON lines only on stdout (rounds, then a summary)",
    )
    mode.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the config and print it resolved; run "
        "nothing (checks that need the data run at the start "
        "of a real run)",
    )
    return p


def _fail(prog: str, message: str, code: int) -> int:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"{prog}: error: {first}", file=sys.stderr)
    return code


def _parse(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> argparse.Namespace | int:
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exc:  # --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2


def run_main(argv: list[str]) -> int:
    """``fedshield run``: run a pilot from a config; returns the exit status."""
    args = _parse(_run_parser(), argv)
    if isinstance(args, int):
        return args
    from core.errors import ConfigError

    try:
        return _run(args)
    except ConfigError as exc:
        return _fail("fedshield run", str(exc), 2)
    except KeyboardInterrupt:
        return _fail("fedshield run", "interrupted; no run folder was kept", 130)
    except Exception as exc:  # a bug or a broken environment, not bad input
        return _fail("fedshield run", f"{type(exc).__name__}: {exc}", 1)


def _run(args: argparse.Namespace) -> int:
    from core.errors import ConfigError
    from core.flower.engine import EngineKind
    from core.pilot.config_file import load_config, to_toml

    output = [f"run.output_dir={json.dumps(args.output)}"] if args.output else []
    cfg = load_config(args.config, [*args.overrides, *output], args.removals)
    if args.dry_run:
        print(to_toml(cfg, header=f"{args.config}: valid; resolved:"), end="")
        return 0
    if cfg.engine.kind is EngineKind.FLOWER_DEPLOYMENT:
        raise ConfigError(
            'engine.kind = "flower-deployment" runs with `flwr run` on a '
            "SuperLink, not `fedshield run`; see examples/flower_app/README.md"
        )
    if cfg.engine.kind is EngineKind.FLOWER_SIMULATION:
        from core.pilot.flower_run import run_flower_simulation

        out = run_flower_simulation(cfg)
        print(f"flower-simulation run written to {out} (metrics.jsonl, ledgers/)")
        return 0
    # torch, Opacus and the data libraries only once the config is good.
    from core.pilot.progress import PilotProgress, summary_lines
    from core.pilot.runner import run_pilot

    progress = PilotProgress(quiet=args.quiet, as_json=args.json)
    report = run_pilot(cfg, reporter=progress)
    if args.json:
        print(json.dumps(report.to_json()), flush=True)
    else:
        print("\n".join(summary_lines(report)), flush=True)
    return 0


def init_main(argv: list[str]) -> int:
    """``fedshield init [PATH]``: write a commented example config."""
    p = argparse.ArgumentParser(
        prog="fedshield init",
        description="Write a commented example pilot config (every key, with "
        "its default and what it does) for `fedshield run`.",
    )
    p.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=Path("fedshield.toml"),
        help="where to write it (default: %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = _parse(p, argv)
    if isinstance(args, int):
        return args
    path: Path = args.path
    if path.exists() and not args.force:
        return _fail("fedshield init", f"{path} exists; use --force to overwrite", 2)
    from core.pilot.config_file import init_template

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(init_template(path), encoding="utf-8")
    except OSError as exc:
        return _fail("fedshield init", f"cannot write {path}: {exc}", 2)
    print(f"wrote {path}; run it with: fedshield run {path}")
    return 0
