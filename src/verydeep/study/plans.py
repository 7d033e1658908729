"""What every plan TOML shares: which kind it is, reading its table, its results block.

A plan is a TOML file with one table naming its kind (``[finetune_study]``, ``[ddp_study]``,
``[transfer_study]``, ``[localization_study]``; a Section 4 grid has ``[study]``). ``verydeep
study --config PLAN`` runs what has no summary yet and rewrites the results block of the plan's
report (between ``<!-- KIND results: begin -->`` and ``end``); the prose around it stays.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Row:
    ...     name: str
    ...     set: tuple[str, ...] = ()
    >>> items(Row, [{"name": "a", "set": ["x=1"]}], "row")
    [Row(name='a', set=('x=1',))]
    >>> splice("# Doc\\n", "<!-- b -->\\nnew\\n<!-- e -->", "<!-- b -->", "<!-- e -->")
    '# Doc\\n\\n<!-- b -->\\nnew\\n<!-- e -->\\n'
"""

from __future__ import annotations

import tomllib
from pathlib import Path

KINDS = ("finetune_study", "ddp_study", "transfer_study", "localization_study")


def plan_kind(path: str | Path) -> str:
    """The plan table a TOML file holds, or ``"study"`` (a Section 4 grid, or no such file)."""
    p = Path(path)
    if not p.is_file():
        return "study"
    return next((k for k in KINDS if k in load_toml(p)), "study")


def load_toml(path: str | Path) -> dict:
    """A plan file's tables; one line naming the file where it is not TOML."""
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid TOML: {e}") from None


def read_table(path: str | Path, kind: str, fields: dict, quick: bool = False, needs: tuple = ()) -> dict:
    """``[kind]`` of a plan TOML (``quick`` lays its ``[quick]`` table over it, for CI); unknown
    keys and missing ``needs`` are refused in one line."""
    d = load_toml(path)
    table = dict(d.get(kind, {}))
    if quick:
        table |= d.get("quick", {})
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) in [{kind}]: {', '.join(unknown)}")
    missing = [k for k in needs if k not in table]
    if missing:
        raise ValueError(f"{path}: [{kind}] needs {', '.join(missing)}")
    return table


def items(kind: type, dicts: list, what: str) -> list:
    """Plan entries (TOML tables) as frozen dataclasses; lists become tuples. Names are distinct
    words (letters, digits, '-', '.'): each names a folder of summaries."""
    out = []
    for d in dicts:
        if isinstance(d, kind):
            out.append(d)
            continue
        unknown = set(d) - set(kind.__dataclass_fields__)
        if unknown or "name" not in d:
            raise ValueError(f"{what} {d.get('name', '?')!r}: needs name; unknown key(s) {sorted(unknown)}")
        out.append(kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}))
    names = [i.name for i in out]
    words = all(n and n.replace("-", "").replace(".", "").isalnum() for n in names)
    if not names or len(set(names)) != len(names) or not words:
        raise ValueError(f"{what} names must be distinct words (letters, digits, -, .): {names}")
    return out


def splice(doc: str, block: str, begin: str, end: str) -> str:
    """``doc`` with its results block (``begin`` ... ``end``) replaced by ``block``, which
    includes both markers; appended where the doc has none."""
    if begin in doc and end in doc:
        return doc[: doc.index(begin)] + block + doc[doc.index(end) + len(end) :]
    return doc.rstrip("\n") + "\n\n" + block + "\n"


def existing_source(path: str | Path, command: str, what: str) -> Path:
    """A plan's source checkpoint: there, and a verydeep checkpoint; else one line that says how
    to make it (``command``), before any work."""
    from ..io.checkpoint import read_meta

    path = Path(path).expanduser()
    if not path.is_file():
        how = f"; make it with: {command}" if command else ""
        raise ValueError(f"{what}: {path} not found{how}")
    read_meta(path)
    return path


def untrained_twin(source: str | Path, dest: str | Path, seed: int = 0) -> str:
    """``source``'s net at a fresh Glorot initialisation (every layer, ``seed``), its input
    convention and classes kept, saved at ``dest`` once; returns ``dest``. The same recipe on
    weights that learnt nothing: the floor a trained net is compared with."""
    import torch

    from ..io.checkpoint import load_model, save_model
    from ..models.init import init_weights

    if not Path(dest).is_file():
        model, meta = load_model(source)
        torch.manual_seed(seed)
        init_weights(model, "glorot")
        save_model(dest, model, meta)
    return str(dest)
