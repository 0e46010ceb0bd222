"""The ``fedshield`` command line.

Each subcommand is one function ``(args, rest) -> int`` registered in
`_COMMANDS`; adding ``run CONFIG.toml`` or ``init`` later means writing that
function and one `add_parser` call. Subcommands that belong to another
package (``audit`` lives in `dp`) are imported only when used, so
``fedshield --help`` works in an install without the optional parts.

>>> main(["--version"]) == 0  # doctest: +ELLIPSIS
fedshield ...
True
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

__all__ = ["main"]

Command = Callable[[argparse.Namespace, list[str]], int]


def _version() -> str:
    try:
        return metadata.version("fedshield")
    except metadata.PackageNotFoundError:
        return "unknown"


def _delegate(command: str, module_name: str, function: str) -> Command:
    """A subcommand that hands everything after its name to `module.function`."""

    def run(args: argparse.Namespace, rest: list[str]) -> int:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name not in {module_name, module_name.split(".")[0]}:
                raise
            print(
                f"fedshield {command}: {module_name} is not available in this "
                "installation",
                file=sys.stderr,
            )
            return 2
        entry = getattr(module, function, None)
        if entry is None:
            print(
                f"fedshield {command}: {module_name} has no {function}(argv); the "
                "installation is incomplete",
                file=sys.stderr,
            )
            return 2
        try:
            return int(entry(rest))
        except SystemExit as exc:  # its argparse exits on --help and usage errors
            return _exit_code(exc)

    return run


def _exit_code(exc: SystemExit) -> int:
    # SystemExit carries None (success), an int, or a message (failure).
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 2


# Each belongs to another module (the audit to `dp`, the pilot runner to
# `core.pilot.commands`) and is imported only when used.
_COMMANDS: dict[str, Command] = {
    "audit": _delegate("audit", "dp.cli", "audit_main"),
    "run": _delegate("run", "core.pilot.commands", "run_main"),
    "init": _delegate("init", "core.pilot.commands", "init_main"),
}
_HELP = {
    "audit": "recompute and check the privacy budget from ledgers "
    "(see `fedshield audit --help`)",
    "run": "run a federation described by a TOML config (see `fedshield run --help`)",
    "init": "write a commented example config (see `fedshield init --help`)",
}
# Every command hands its arguments on rather than refusing them.
_PASSTHROUGH = frozenset(_COMMANDS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedshield",
        description="Federated learning with secure aggregation and DP-SGD.",
    )
    parser.add_argument(
        "--version", action="version", version=f"fedshield {_version()}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # add_help=False: `fedshield audit --help` is passed on to the command.
    for name, text in _HELP.items():
        sub.add_parser(name, add_help=False, help=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedshield`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args, rest = parser.parse_known_args(args_list)
    except SystemExit as exc:  # --help, --version and usage errors
        return _exit_code(exc)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if rest and args.command not in _PASSTHROUGH:
        print(
            f"fedshield {args.command}: unrecognised arguments: {' '.join(rest)}",
            file=sys.stderr,
        )
        return 2
    return _COMMANDS[args.command](args, rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
