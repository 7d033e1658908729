"""Run the study: train every net of the plan (resumable), evaluate it once, cache the numbers.

Each run lives in ``<out_dir>/<name>/`` (a normal run directory); ``study.json`` there holds its
CPU and wall time, ``eval.pt`` its posteriors (read back with ``weights_only=True``). A rerun
skips what is done, so the study survives interruption.

Example:
    >>> from verydeep.study.runner import run_config
    >>> from verydeep.study.plan import StudySpec, build_plan
    >>> spec = StudySpec(base=["model.crop_size=32"])
    >>> cfg = run_config(spec, next(r for r in build_plan(spec) if r.name == "D-384"))
    >>> cfg.model.arch, cfg.data.scale, cfg.optim.lr, cfg.train.init_from
    ('D', [384], 0.001, 'runs/study/D-256/checkpoints/best.safetensors')
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import torch

from ..config import RunConfig
from ..evaluation import EvalData, EvalOptions, evaluate_models, open_data
from ..io.checkpoint import Meta, atomic_write, load_model, save_state
from ..models.vgg import VGG
from ..train import fit
from .plan import JITTERED, Run, StudySpec, build_plan

TABLE5 = ["dense", "multicrop", "dense+multicrop"]


def _best(spec: StudySpec, name: str) -> str:
    return str(Path(spec.out_dir) / name / "checkpoints" / "best.safetensors")


def run_config(spec: StudySpec, run: Run) -> RunConfig:
    o = [*spec.base, *run.overrides, f"model.arch={run.arch}", f"data.scale={run.scale}"]
    o.append(f"train.out_dir={Path(spec.out_dir) / run.name}")
    if run.after:
        o.append(f"train.init_from={_best(spec, run.after)}")
    if run.init_from_a:
        o.append(f"model.init_from_a={_best(spec, run.init_from_a)}")
    return RunConfig.from_sources(overrides=o)


def train_run(spec: StudySpec, run: Run, progress: bool) -> dict:
    """Train ``run`` unless already done; returns its timing record."""
    record_path = Path(spec.out_dir) / run.name / "study.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    print(f"study: training {run.name}", file=sys.stderr, flush=True)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    fit(run_config(spec, run), progress=progress)
    record = {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0}
    atomic_write(record_path, json.dumps(record).encode())
    return record


def evaluate_run(spec: StudySpec, run: Run, data: EvalData) -> dict:
    """Evaluate ``run``'s best checkpoint once; cached in ``eval.pt``."""
    path = Path(spec.out_dir) / run.name / "eval.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    model, meta = load_model(_best(spec, run.name))
    wall0 = time.perf_counter()
    out = evaluate_net(run.name, model, meta, data)
    out["wall_s"] = time.perf_counter() - wall0  # the report sums it into the study's cost
    save_state(path, out)
    return out


def evaluate_net(name: str, model: VGG, meta: Meta, data: EvalData) -> dict:
    """Single-scale dense (Table 3), multi-scale dense (Table 4), and for jittered D/E the
    three methods of Table 5: {"single/dense": {errors, probs, ...}, ..., "labels"}."""
    out: dict = {}
    multi_methods = TABLE5 if name in ("D-jit", "E-jit") else ["dense"]
    for scales, methods in (("single", ["dense"]), ("multi", multi_methods)):
        opts = EvalOptions(methods=methods, scales=scales, progress=False, workers=0)
        res = evaluate_models([(name, model, meta)], data, opts)
        for row in res["rows"]:
            key = f"{scales}/{row['method']}"
            out[key] = {k: row[k] for k in ("images_per_s", "forwards_per_image")}
            out[key] |= {k: row[k] / 100 for k in ("top1_err", "top5_err")}  # evaluation reports %
            out[key]["probs"] = res["posteriors"][(name, row["method"])]
    out["labels"] = res["labels"]
    return out


def best_val_error(log: Path) -> float | None:
    """The lowest held-out (validation split, not test) error in a run's ``log.csv``."""
    if not log.is_file():
        return None
    with log.open() as fh:
        errs = [float(row["val_err"]) for row in csv.DictReader(fh) if row.get("val_err")]
    return min(errs) if errs else None


def run_study(
    spec: StudySpec, progress: bool = True, report_only: bool = False, only: list[str] | None = None
) -> dict:
    """Train and evaluate every run; returns {name: {"record", "eval", "run"}}.

    ``report_only``: train and evaluate nothing; collect the runs already finished (to report
    on a study that is still going; the report marks the rest "not run"). ``only``: train and
    evaluate just these runs (their starting points must be done), e.g. in parallel processes.
    """
    data = open_data("fashion-mnist").subset(spec.test_limit or None)
    results = {}
    for run in build_plan(spec):
        folder = Path(spec.out_dir) / run.name
        if only is not None and run.name not in only:
            continue
        if report_only and not ((folder / "study.json").is_file() and (folder / "eval.pt").is_file()):
            continue
        record = train_run(spec, run, progress)
        results[run.name] = {"run": run, "record": record, "eval": evaluate_run(spec, run, data)}
        results[run.name]["val_err"] = best_val_error(Path(spec.out_dir) / run.name / "log.csv")
        e = results[run.name]["eval"]
        print(
            f"study: {run.name}: test top-1 error {100 * e['single/dense']['top1_err']:.2f}% (single scale), "
            f"{100 * e['multi/dense']['top1_err']:.2f}% (multi-scale)",
            file=sys.stderr,
            flush=True,
        )
    return results


__all__ = ["JITTERED", "run_config", "run_study"]
