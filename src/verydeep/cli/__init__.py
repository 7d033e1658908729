"""The ``verydeep`` command line: one module per subcommand, no logic of its own.

Each module in ``COMMANDS`` defines ``register(subparsers)``, which adds its parser and sets
``func`` to a function taking the parsed arguments. Errors a user can fix (``ValueError``,
``FileNotFoundError``) become one line on stderr and exit code 2, never a traceback.

Example:
    >>> from verydeep.cli import main
    >>> main(["info", "--json"]) == 0  # doctest: +ELLIPSIS
    {...
    True
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = [
    "info", "train", "eval", "predict", "features", "transfer", "localize", "convert", "export", "study",
    "bench", "preresize",
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from .values import Parser

    parser = Parser(prog="verydeep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        print(f"verydeep {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full or read-only file system, an I/O error: name the path and cause
        where = f"{e.filename}: " if e.filename else ""
        print(f"verydeep {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"verydeep {args.command}: interrupted", file=sys.stderr)
        return 130


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeated ``--set section.key=value`` (shared by commands)."""
    parser.add_argument("--config", help="TOML file with [model] [data] [optim] [train] sections")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. model.arch=E"
    )
