"""A study run's summary, kept where git can commit it: config, log, result, timing, evaluation.

Weights stay in the run directory (outside the repository); what a report needs is copied to
``<results_dir>/<run>/``: ``config.json``, ``log.csv``, ``result.json``, ``study.json`` (CPU and
wall time), ``eval.json`` (the numbers) and ``posteriors.safetensors`` (float16 class posteriors
per method and the labels, for ensembles). A fresh clone re-renders the report from these alone.

Example:
    >>> import tempfile, torch
    >>> from verydeep.io.study_results import read_eval, write_eval
    >>> d = tempfile.mkdtemp()
    >>> ev = {"single/dense": {"top1_err": 0.5, "top5_err": 0.0, "probs": torch.eye(2)},
    ...       "labels": torch.tensor([0, 0]), "wall_s": 1.0}
    >>> write_eval(d, ev)
    >>> back = read_eval(d)
    >>> back["single/dense"]["top1_err"], back["single/dense"]["probs"].dtype, back["labels"].tolist()
    (0.5, torch.float32, [0, 0])
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .files import atomic_write

RUN_FILES = ("config.json", "log.csv", "result.json", "study.json")


def copy_run_files(run_dir: str | Path, dest: str | Path) -> None:
    """The run's small files (those that exist) into ``dest``, each written atomically."""
    dest = Path(dest)
    for name in RUN_FILES:
        src = Path(run_dir) / name
        if src.is_file():
            atomic_write(dest / name, src.read_bytes())


def write_eval(dest: str | Path, ev: dict) -> None:
    """``eval.json`` (numbers) and ``posteriors.safetensors`` (float16 posteriors, labels)."""
    dest = Path(dest)
    numbers = {k: {m: x for m, x in v.items() if m != "probs"} for k, v in ev.items() if isinstance(v, dict)}
    numbers |= {k: v for k, v in ev.items() if isinstance(v, (int, float))}
    tensors = {k: v["probs"].to(torch.float16).contiguous() for k, v in ev.items() if isinstance(v, dict)}
    tensors["labels"] = ev["labels"].to(torch.int64).contiguous()
    atomic_write(dest / "posteriors.safetensors", st_save(tensors))
    atomic_write(dest / "eval.json", json.dumps(numbers, indent=1).encode())


def has_eval(dest: str | Path) -> bool:
    return (Path(dest) / "eval.json").is_file() and (Path(dest) / "posteriors.safetensors").is_file()


def read_eval(dest: str | Path) -> dict:
    """The evaluation ``write_eval`` wrote, posteriors back as float32."""
    dest = Path(dest)
    numbers = json.loads((dest / "eval.json").read_text())
    tensors = st_load((dest / "posteriors.safetensors").read_bytes())
    out: dict = {"labels": tensors.pop("labels")}
    for k, v in numbers.items():
        out[k] = v if not isinstance(v, dict) else v | {"probs": tensors[k].float()}
    return out


def read_json(path: str | Path) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def read_record(dest: str | Path) -> dict | None:
    """The run's timing record (``study.json``: CPU and wall seconds), or None."""
    return read_json(Path(dest) / "study.json")


def read_log(path: str | Path) -> list[dict[str, float]]:
    """A run's ``log.csv``, one dict per epoch with its non-empty columns as floats ([] if absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open() as fh:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(fh)]
