"""The ``verydeep`` command line: one module per subcommand, no logic of its own.

Each module in ``COMMANDS`` defines ``register(subparsers)``, which adds its parser and sets
``func`` to a function taking the parsed arguments. Errors a user can fix (``ValueError``,
``FileNotFoundError``) become one line on stderr and exit code 2, never a traceback.
Building the parser imports no torch: each command imports what it needs when it runs.

Example:
    >>> from verydeep.cli import main
    >>> main(["info", "--json"]) == 0  # doctest: +ELLIPSIS
    {...
    True
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__
from ..allocator import retain_freed_memory

DESCRIPTION = """Very Deep ConvNets (Simonyan & Zisserman, 2015), the whole system: configs A-E,
the paper's training recipe, dense / multi-crop / multi-scale testing, ensembles,
localisation (Appendix A) and transfer features (Appendix B)."""
EPILOG = """examples:
  verydeep info                                   Tables 1 and 2 of the paper
  verydeep train --print-config                   every config key, its default and its range
  verydeep train --set data.dataset=imagefolder --set data.root=~/data/imagenet --set model.arch=D
  verydeep eval runs/D/checkpoints/best.safetensors --data ~/data/imagenet/val
  verydeep predict -m vgg16.safetensors photo.jpg --heatmap map.png

Run `verydeep COMMAND --help` for a command's options and examples."""

COMMANDS = [
    "info", "train", "eval", "predict", "features", "transfer", "localize", "convert", "export", "study",
    "bench", "preresize", "style",
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from .values import Parser

    parser = Parser(prog="verydeep", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"verydeep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    retain_freed_memory()  # big tensors reused between steps, not faulted in anew (allocator.py)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        print(f"verydeep {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error, and nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as e:  # a full or read-only file system, an I/O error: name the path and cause
        where = f"{e.filename}: " if e.filename else ""
        print(f"verydeep {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"verydeep {args.command}: interrupted", file=sys.stderr)
        return 130


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeated ``--set section.key=value`` (shared by commands)."""
    from .values import path_arg

    parser.add_argument(
        "--config", help="TOML file with [model] [data] [optim] [train] [finetune] sections", type=path_arg
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. model.arch=E"
    )
