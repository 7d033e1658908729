"""Typed run configuration: one dataclass per section (``config/sections.py``), held by
``RunConfig``, read from TOML files and ``--set section.key=value`` overrides.

Every field has the paper's value as its default where the paper gives one. Scales (S, Q) are
written in the paper's units, i.e. pixels for a 224 crop; for another crop size they are scaled
by crop/224 so that small-image work keeps the paper's ratios (S=256 at crop 32 -> 37 px).

Example:
    >>> from verydeep.config import RunConfig
    >>> cfg = RunConfig.from_sources(overrides=["model.arch=A", "data.scale=[256, 512]"])
    >>> cfg.model.arch, cfg.data.scale, cfg.data.jittered
    ('A', [256, 512], True)
"""

from __future__ import annotations

import ast
import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..ranges import describe
from .sections import (
    PLATEAU_KEYS,
    DataConfig,
    DistConfig,
    FinetuneConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    check_schedule_keys,
    is_default,
    pixels,
)

__all__ = [
    "PLATEAU_KEYS",
    "DataConfig",
    "DistConfig",
    "FinetuneConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "check_schedule_keys",
    "is_default",
    "pixels",
]


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def __post_init__(self) -> None:
        changed = [
            f"finetune.{f.name}"
            for f in dataclasses.fields(self.finetune)
            if not is_default(self.finetune, f.name)
        ]
        if changed and not self.train.init_from:
            raise ValueError(f"{', '.join(changed)} apply with train.init_from (a checkpoint to fine-tune)")
        crop = self.model.crop_size
        for what, s in [("data.scale", v) for v in self.data.scale] + [
            ("data.test_scale", self.data.test_scale)
        ]:
            if s and s < 224:  # paper units: S = 224 is the crop itself, at any crop size
                raise ValueError(
                    f"{what} {s} (paper units, {round(s * crop / 224)} px at crop {crop}) is smaller than "
                    "the crop: S and Q must be >= 224"
                )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The resolved config as a TOML file (loadable with ``--config``), each key with its range."""
        sections = []
        for section in dataclasses.fields(self):
            sub = getattr(self, section.name)
            lines = [f"[{section.name}]"]
            for f in dataclasses.fields(sub):
                v = getattr(sub, f.name)
                text = str(v).lower() if isinstance(v, bool) else json.dumps(v)
                lines.append(f"{f.name} = {text}  # {describe(f)}")
            sections.append("\n".join(lines))
        return "\n\n".join(sections) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        sections = {}
        unknown_sections = set(d) - set(_TYPES)
        if unknown_sections:
            raise ValueError(f"unknown section(s) {sorted(unknown_sections)}; known: {list(_TYPES)}")
        for f in dataclasses.fields(cls):
            sub_cls = _TYPES[f.name]
            values = d.get(f.name, {})
            if not isinstance(values, dict):  # `model = 3` or `[[model]]` in the TOML
                raise ValueError(f"[{f.name}] must be a table of keys, got {type(values).__name__}")
            known = {g.name for g in dataclasses.fields(sub_cls)}
            unknown = set(values) - known
            if unknown:
                raise ValueError(f"unknown key(s) in [{f.name}]: {', '.join(sorted(unknown))}")
            hints = typing.get_type_hints(sub_cls)
            values = {k: _typed(f"{f.name}.{k}", hints[k], v) for k, v in values.items()}
            sections[f.name] = sub_cls(**values)
        return cls(**sections)

    @classmethod
    def from_sources(cls, path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
        """Defaults, then a TOML file, then ``section.key=value`` overrides, then validation."""
        d: dict = {}
        if path:
            p = Path(path)
            if not p.is_file():
                raise ValueError(f"config file not found: {p}")
            try:
                with p.open("rb") as fh:
                    d = tomllib.load(fh)
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"config file {p} is not valid TOML: {e}") from None
        for item in overrides:
            key, sep, raw = item.partition("=")
            section, _, name = key.strip().partition(".")
            if not sep or not name or section not in _TYPES:
                raise ValueError(
                    f"--set expects section.key=value with section in {list(_TYPES)}, got {item!r}"
                )
            d.setdefault(section, {})[name] = _coerce(section, name, raw.strip())
        return cls.from_dict(d)


_TYPES = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "finetune": FinetuneConfig,
    "dist": DistConfig,
}


def _typed(key: str, hint: object, value: object) -> object:
    """``value`` if it has the field's type (ints accepted as floats), else a one-line ValueError."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, list):
            return [_typed(key, item, v) for v in value]
    elif hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
        return value
    raise ValueError(f"{key} expects {_what(hint)}, got {value!r}")


def _what(hint: object) -> str:
    """A field type in words: ``float``, ``a list of int such as [256, 512]``."""
    if typing.get_origin(hint) is list:
        return f"a list of {typing.get_args(hint)[0].__name__} such as [256, 512]"
    return getattr(hint, "__name__", str(hint))


def _coerce(section: str, name: str, raw: str) -> object:
    """Parse ``raw`` as the field's type: numbers, bools, lists (``[256, 512]`` or ``256,512``),
    or plain strings. Errors name the key as it was typed (``data.scale``)."""
    hints = typing.get_type_hints(_TYPES[section])
    key = f"{section}.{name}"
    if name not in hints:
        raise ValueError(f"unknown key {key!r} (`verydeep train --print-config` lists them all)")
    hint = hints[name]
    if hint is str:
        return raw
    if hint is bool:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{key} expects true or false, got {raw!r}")
        return raw.lower() in ("true", "1")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ValueError(f"{key} expects {_what(hint)}, got {raw!r}") from None
    if typing.get_origin(hint) is list and isinstance(value, tuple):  # 256,512 reads as a tuple
        value = list(value)
    if hint is float and isinstance(value, int):
        value = float(value)
    return value
