"""Argument types shared by the subcommands, and a parser whose errors are one line.

argparse checks each value as it parses, so a bad ``--grid 0`` or ``--threads -3`` is refused
before torch is imported or any file is read, with one line and exit code 2. (The library checks
the same bounds again, e.g. ``EvalOptions.__post_init__``, for Python callers.)

Example:
    >>> p = Parser(prog="demo")
    >>> _ = p.add_argument("--grid", type=int_range(1, 32))
    >>> p.parse_args(["--grid", "5"]).grid
    5
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from ..ranges import DEVICE_PATTERN, MAX_SCALE, MIN_SCALE


def only_names(text: str, known: list[str], noun: str, example: str) -> list[str]:
    """``--only A,B``: the names, each known; none given is refused (an empty variable in a
    script must not mean "all of it", which can be hours)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--only: no {noun} names given (e.g. --only {example})")
    unknown = sorted(set(names) - set(known))
    if unknown:
        plural = "entries" if noun == "entry" else f"{noun}s"
        raise ValueError(f"--only: no such {plural} in the plan: {', '.join(unknown)}")
    return names


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and appends each flag's default where it says something
    (not for None, False or an empty list, nor where the help already names it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        quiet = default in (None, False, [], argparse.SUPPRESS) or "default" in text
        if quiet or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` printing ``prog: error: message (see prog --help)``: one line, exit 2;
    help shows defaults and keeps the examples' layout."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi] (no upper bound if ``hi`` is None)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi if hi is not None else 'inf'}], got {v}")
        return v

    parse.__name__ = "integer"
    return parse


def float_range(gt: float, hi: float) -> Callable[[str], float]:
    """A finite number in (gt, hi]."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not gt < v <= hi:
            raise argparse.ArgumentTypeError(f"must be in ({gt:g}, {hi:g}], got {text}")
        return v

    parse.__name__ = "number"
    return parse


def fractions(text: str) -> tuple[float, ...]:
    """Comma-separated numbers, e.g. ``0.5,0.75``; empty: none. Only parsed here: their range is
    checked by the config that receives them (``LocTrainConfig.lr_drops``), in one place."""
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def device(text: str) -> str:
    """auto, cpu, cuda or cuda:N (whether that GPU exists is checked when the command runs)."""
    if not re.fullmatch(DEVICE_PATTERN, text):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def scales_arg(text: str) -> str:
    """``multi``, ``single`` or comma-separated Q values in [MIN_SCALE, MAX_SCALE] paper units."""
    if text in ("multi", "single"):
        return text
    for part in text.split(","):
        if SCALE(part) < MIN_SCALE:
            raise argparse.ArgumentTypeError(
                f"must be >= {MIN_SCALE} paper units (the crop; a smaller Q is below one window), got {part}"
            )
    return text


def add_dense_args(p: argparse.ArgumentParser, default: str | None = "centre") -> None:
    """``--dense-align`` and ``--no-exif``, the same for eval, predict and features (eval and
    predict pass ``default=None`` to tell a given value from the default: centre)."""
    p.add_argument(
        "--dense-align",
        choices=["centre", "topleft"],
        default=default,
        help="dense: the border pixels no 32-px-stride window sees are cut from both sides (centre, "
        "the default) or left out at the bottom/right as a plain conv pass does (topleft)",
    )
    p.add_argument("--no-exif", action="store_true", help="ignore EXIF orientation (pixels as stored)")


def add_precision_args(p: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--calibrate``, the same for eval, predict and features."""
    p.add_argument(
        "--precision",
        # = numerics.PRECISIONS, written out: --help must not import torch
        choices=["fp32", "tf32", "winograd", "bf16", "int8", "int8-checked", "auto"],
        default="fp32",
        help="fp32 (exact, IEEE on GPUs too); tf32: TF32 tensor cores (GPUs of compute capability 8.0+); "
        "winograd: fp32 with Winograd F(4x4,3x3) convolutions, equal up to "
        "rounding (CPU); bf16 autocast; int8: the net quantised on 32 calibration photos (CPU); "
        "int8-checked: int8, with near-tied posteriors recomputed in fp32 (not for features); "
        "auto: bf16 where the hardware has it natively, else winograd on a CPU (docs/BENCHMARKS.md)",
    )
    p.add_argument(
        "--calibrate",
        metavar="DIR",
        help="int8: calibrate on 32 photos of this folder (default: 32 of the inputs, pixels only)",
    )


THREADS = int_range(1, 1024)
SCALE = float_range(0, MAX_SCALE)  # a test scale Q in paper units


def path_arg(text: str) -> str:
    """A file or folder path. An empty one (an unset shell variable) is an error: as a path it
    would be the working directory, and as an output it would read as "write nothing"."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset variable?)")
    return text


def require_png(path: str, flag: str) -> None:
    """An output PNG's name must say so (the file is PNG data whatever it is called); checked after
    ``output_target``, which names a directory or device first."""
    if not path.lower().endswith(".png"):
        raise ValueError(f"{flag} writes a PNG: give a path ending in .png, got {path!r}")
