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


def _audit(args: argparse.Namespace, rest: list[str]) -> int:
    # The privacy audit belongs to `dp`; everything after "audit" is its argv.
    try:
        module = importlib.import_module("dp.cli")
    except ModuleNotFoundError as exc:
        if exc.name not in {"dp", "dp.cli"}:
            raise
        print(
            "fedshield audit: the privacy audit (dp.cli) is not available in "
            "this installation",
            file=sys.stderr,
        )
        return 2
    audit_main = getattr(module, "audit_main", None)
    if audit_main is None:
        print(
            "fedshield audit: dp.cli has no audit_main(argv); the dp package is "
            "incomplete",
            file=sys.stderr,
        )
        return 2
    try:
        return int(audit_main(rest))
    except SystemExit as exc:  # its argparse exits on --help and usage errors
        return _exit_code(exc)


def _exit_code(exc: SystemExit) -> int:
    # SystemExit carries None (success), an int, or a message (failure).
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 2


_COMMANDS: dict[str, Command] = {"audit": _audit}
# Commands whose unknown arguments are handed on rather than refused.
_PASSTHROUGH = frozenset({"audit"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedshield",
        description="Federated learning with secure aggregation and DP-SGD.",
    )
    parser.add_argument(
        "--version", action="version", version=f"fedshield {_version()}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # add_help=False: `fedshield audit --help` is passed on to the audit itself.
    sub.add_parser(
        "audit",
        add_help=False,
        help="recompute and check the privacy budget from a ledger "
        "(see `fedshield audit --help`)",
    )
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
