"""Declared ranges for config fields: every field of a config dataclass says what it accepts.

``spec(default, lo=, hi=, gt=, lt=, choices=, pattern=)`` makes a dataclass field that carries its
range; ``check(obj, section)`` validates every field of ``obj`` (one-line ``ValueError``) and
``describe(f)`` says the range in words (``verydeep train --print-config`` lists them).

Example:
    >>> from dataclasses import dataclass
    >>> from verydeep.ranges import spec, check, describe
    >>> @dataclass
    ... class Opt:
    ...     lr: float = spec(0.01, gt=0, hi=10)
    >>> check(Opt(lr=-1), "optim")
    Traceback (most recent call last):
    ...
    ValueError: optim.lr must be in (0, 10], got -1
    >>> from dataclasses import fields
    >>> describe(fields(Opt)[0])
    '(0, 10]'
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"  # train.device, and every command's --device
# The largest training or test scale, in paper units: 16x the paper's 256 (a 4096 px side at crop
# 224). Larger ones cost more memory than any machine has (Q=1e9 asked for petabytes).
MAX_SCALE = 4096
# The smallest test scale Q, in paper units: the crop itself. A smaller Q would leave the image
# smaller than one window; the nets then saw Q = 224 while the reports printed the Q asked for.
MIN_SCALE = 224


def spec(
    default: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    choices: Sequence | None = None,
    pattern: str | None = None,
    words: str = "",
) -> Any:
    """A dataclass field with its default and its range (bounds inclusive: lo/hi; exclusive:
    gt/lt), allowed values (``choices``) or a regular expression a string must match fully;
    ``words`` describes what is checked elsewhere (an architecture name, a path)."""
    meta = {"lo": lo, "hi": hi, "gt": gt, "lt": lt, "choices": choices, "pattern": pattern, "words": words}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def describe(f: dataclasses.Field) -> str:
    """The field's range in words: ``[1, 64]``, ``(0, 1)``, ``one of a | b``, ``any``."""
    m = f.metadata
    if m.get("words"):
        return m["words"]
    if m.get("choices") is not None:
        return "one of " + " | ".join(str(c) for c in m["choices"])
    if m.get("pattern"):
        return f"matches {m['pattern']}"
    lo = m.get("lo") if m.get("lo") is not None else m.get("gt")
    hi = m.get("hi") if m.get("hi") is not None else m.get("lt")
    if lo is None and hi is None:
        return {"bool": "true | false", bool: "true | false"}.get(f.type, "any")
    left = "[" if m.get("lo") is not None else "("
    right = "]" if m.get("hi") is not None else ")"
    return f"{left}{_num(lo)}, {_num(hi)}{right}"


def _num(x: float | None) -> str:
    if x is None:
        return "inf"
    return f"{int(x):,}" if float(x).is_integer() and abs(x) >= 1000 else f"{x:g}"


def check(obj: Any, section: str) -> None:
    """Every field of ``obj`` inside its declared range, or a one-line ValueError naming it. A
    field with numeric bounds holds a number (an integer where it is declared ``int``; None
    only where None is its default)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if not _typed(f, v):
                kind = "an integer" if str(f.type).startswith("int") else "a number"
                raise ValueError(f"{section}.{f.name} must be {kind} {_words(f)}, got {v!r}")
            if not _ok(f.metadata, v):
                raise ValueError(f"{section}.{f.name} must be {_words(f)}, got {v!r}")


def check_value(cls: type, name: str, value: Any, label: str) -> None:
    """``value`` inside the declared range of field ``name`` of dataclass ``cls`` (a list: each
    item), or a one-line ValueError that calls it ``label``. For values read from files (a
    checkpoint's metadata) that must obey the config's own ranges."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, bool) or not _ok(f.metadata, v):
            raise ValueError(f"{label} must be {_words(f)}, got {v!r}")


def _words(f: dataclasses.Field) -> str:
    d = describe(f)
    if f.metadata.get("words"):
        return d
    if d.startswith("matches"):
        return "a string matching " + d.removeprefix("matches ")
    return d if d.startswith("one of") else f"in {d}"


def _typed(f: dataclasses.Field, v: Any) -> bool:
    if not any(f.metadata.get(k) is not None for k in ("lo", "hi", "gt", "lt")):
        return True
    if v is None:
        return f.default is None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return isinstance(v, int) or not str(f.type).startswith("int")


def _ok(m: Any, v: Any) -> bool:
    if m.get("choices") is not None:
        return v in m["choices"]
    if m.get("pattern") is not None:
        return isinstance(v, str) and re.fullmatch(m["pattern"], v) is not None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return True
    return not (
        (m.get("lo") is not None and v < m["lo"])
        or (m.get("hi") is not None and v > m["hi"])
        or (m.get("gt") is not None and v <= m["gt"])
        or (m.get("lt") is not None and v >= m["lt"])
        or v != v  # NaN
    )
