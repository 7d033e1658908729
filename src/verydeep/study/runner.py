"""Run the study: train every net of the plan (resumable), evaluate it once, keep the numbers.

Each run lives in ``<out_dir>/<name>/`` (a normal run directory, weights included; keep it
outside the repository); ``study.json`` there holds its CPU and wall time. Its summary (config,
log, result, timing, evaluation numbers and posteriors) goes to ``<results_dir>/<name>/``
(``io/study_results.py``), which is meant to be committed: a rerun skips every run with a
summary, so the study survives interruption and a new machine, and a run whose starting
checkpoint is gone (or from a run killed mid-way) retrains that parent first.

Example:
    >>> from verydeep.study.runner import run_config
    >>> from verydeep.study.plan import StudySpec, build_plan
    >>> spec = StudySpec(base=["model.crop_size=32"])
    >>> cfg = run_config(spec, next(r for r in build_plan(spec) if r.name == "D-384"))
    >>> cfg.model.arch, cfg.data.scale, cfg.optim.lr, cfg.train.init_from
    ('D', [384], 0.001, 'runs/study/D-256/checkpoints/best.safetensors')
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..config import PLATEAU_KEYS, RunConfig
from ..evaluation import EvalData, EvalOptions, evaluate_models, open_data
from ..io import study_results as summary
from ..io.checkpoint import Meta, load_model
from ..io.files import atomic_write
from ..models.vgg import VGG
from ..train import fit
from .plan import JITTERED, Run, StudySpec, build_plan

TABLE5 = ["dense", "multicrop", "dense+multicrop"]


def best_checkpoint(spec: StudySpec, name: str) -> str:
    """Where run ``name`` keeps its held-out-best weights (present only where it was trained)."""
    return str(Path(spec.out_dir) / name / "checkpoints" / "best.safetensors")


def trained(spec: StudySpec, name: str) -> bool:
    """Run ``name`` finished training here: its timing record and its best checkpoint exist (a
    run killed mid-way has a best checkpoint of its early epochs, and no record)."""
    folder = Path(spec.out_dir) / name
    return summary.read_record(folder) is not None and Path(best_checkpoint(spec, name)).is_file()


def summary_dir(spec: StudySpec, name: str) -> Path:
    """Where a run's summary lives: ``results_dir`` if the study keeps one, else its run directory."""
    return Path(spec.results_dir or spec.out_dir) / name


def run_config(spec: StudySpec, run: Run) -> RunConfig:
    """The run's config: the plan's ``base``, then the run's own keys. A run that chooses the
    cosine schedule does not inherit the base's plateau-rule keys (the grid's schedule)."""
    base = spec.base
    if "optim.schedule=cosine" in run.overrides:
        base = [o for o in base if o.partition("=")[0] not in {f"optim.{k}" for k in PLATEAU_KEYS}]
    o = [*base, *run.overrides, f"model.arch={run.arch}", f"data.scale={run.scale}"]
    o.append(f"train.out_dir={Path(spec.out_dir) / run.name}")
    if run.after:
        o.append(f"train.init_from={best_checkpoint(spec, run.after)}")
    if run.init_from_a:
        o.append(f"model.init_from_a={best_checkpoint(spec, run.init_from_a)}")
    return RunConfig.from_sources(overrides=o)


def open_test_data(spec: StudySpec) -> EvalData:
    """The split the report is on (never used for a choice), cut to ``test_limit`` if set."""
    return open_data(spec.test_data).subset(spec.test_limit or None)


def train_run(spec: StudySpec, run: Run, progress: bool, keep_summary: bool = False) -> dict:
    """Train ``run`` unless its run directory says it is done; returns its timing record.

    ``keep_summary``: a parent retrained for a child (its checkpoint was gone) keeps the
    summary it already has, whose evaluation belongs to the first training.
    """
    folder = Path(spec.out_dir) / run.name
    if trained(spec, run.name):
        return summary.read_record(folder)
    print(f"study: training {run.name}", file=sys.stderr, flush=True)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    fit(run_config(spec, run), progress=progress)
    if not Path(best_checkpoint(spec, run.name)).is_file():
        raise ValueError(f"study: {run.name} finished without {best_checkpoint(spec, run.name)}")
    record = {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0}
    atomic_write(folder / "study.json", json.dumps(record).encode())
    if spec.results_dir:
        # a retrained parent keeps the summary of its first training, and its own log goes beside
        # it: its children start from these weights, which the report's numbers did not come from
        dest = summary_dir(spec, run.name)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        summary.copy_run_files(folder, dest / "retrains" / stamp if keep_summary else dest)
    return record


def ensure_parents(spec: StudySpec, run: Run, plan: dict[str, Run], progress: bool) -> None:
    """Retrain (parents first) every run whose checkpoint ``run`` starts from is gone or unfinished."""
    for name in run.parents:
        if not trained(spec, name):
            ensure_parents(spec, plan[name], plan, progress)
            print(f"study: {name} has no finished checkpoint; {run.name} starts from it", file=sys.stderr)
            train_run(spec, plan[name], progress, keep_summary=summary.has_eval(summary_dir(spec, name)))


def evaluate_run(spec: StudySpec, run: Run, data: EvalData) -> None:
    """Evaluate ``run``'s best checkpoint and write its summary's evaluation."""
    model, meta = load_model(best_checkpoint(spec, run.name))
    print(f"study: evaluating {run.name} on {len(data)} images", file=sys.stderr, flush=True)
    wall0 = time.perf_counter()
    out = score_run(run, model, meta, data)
    out["wall_s"] = time.perf_counter() - wall0  # the report sums it into the study's cost
    summary.write_eval(summary_dir(spec, run.name), out)


def score_run(run: Run, model: VGG, meta: Meta, data: EvalData) -> dict:
    """Centre crop and dense at the single scale (Table 3), multi-scale dense (Table 4), and for
    the grid's jittered nets the three methods of Table 5: {"single/dense": {errors, probs, ...},
    ..., "labels"}. bf16 where the hardware has it natively, as in training."""
    out: dict = {}
    table5 = run.group == "main" and run.jittered
    workers = 1 if data.samples is not None else 0  # decode photos beside the net
    for scales, methods in (("single", ["centre", "dense"]), ("multi", TABLE5 if table5 else ["dense"])):
        opts = EvalOptions(
            methods=methods,
            scales=scales,
            progress=False,
            workers=workers,
            precision="auto",
            channels_last=True,
        )
        res = evaluate_models([(run.name, model, meta)], data, opts)
        for row in res["rows"]:
            key = f"{scales}/{row['method']}"
            out[key] = {k: row[k] for k in ("images_per_s", "forwards_per_image")}
            out[key] |= {k: row[k] / 100 for k in ("top1_err", "top5_err")}  # evaluation reports %
            out[key]["probs"] = res["posteriors"][(run.name, row["method"])]
    out["labels"] = res["labels"]
    return out


def best_val_error(log: Path) -> float | None:
    """The lowest held-out (validation split of train, not the reported split) error in ``log.csv``."""
    errs = [row["val_err"] for row in summary.read_log(log) if "val_err" in row]
    return min(errs) if errs else None


def epoch_seconds(log: Path) -> tuple[float, float | None]:
    """Wall and CPU seconds summed over ``log.csv``'s epochs: every part of a resumed run, where
    ``study.json`` holds only the last part. CPU is None for logs written before
    epochs recorded it (``cpu_s``)."""
    rows = summary.read_log(log)
    wall = sum(r.get("seconds", 0.0) for r in rows)
    has_cpu = bool(rows) and all("cpu_s" in r for r in rows)
    return wall, (sum(r["cpu_s"] for r in rows) if has_cpu else None)


def retrain_errors(where: Path) -> dict[str, float | None]:
    """{UTC stamp: best held-out error} of each retraining kept under ``where/retrains/``."""
    runs = sorted(p for p in (where / "retrains").glob("*") if (p / "log.csv").is_file())
    return {p.name: best_val_error(p / "log.csv") for p in runs}


def load_result(spec: StudySpec, run: Run) -> dict | None:
    """{"run", "record", "eval", "val_err"} from the run's summary, or None if it is not done."""
    where = summary_dir(spec, run.name)
    record = summary.read_record(where)
    if record is None or not summary.has_eval(where):
        return None
    out = {"run": run, "record": record, "eval": summary.read_eval(where)}
    out["val_err"] = best_val_error(where / "log.csv")
    out["epoch_seconds"], out["epoch_cpu"] = epoch_seconds(where / "log.csv")
    out["retrains"] = retrain_errors(where)
    out |= {k: summary.read_json(where / f"{k}.json") for k in ("result", "config")}
    return out


def run_study(
    spec: StudySpec, progress: bool = True, report_only: bool = False, only: list[str] | None = None
) -> dict:
    """Train and evaluate every run that has no summary; returns {name: load_result(...)}.

    ``report_only``: train and evaluate nothing; collect the runs already finished (to report
    on a study that is still going; the report marks the rest "not run"). ``only``: train and
    evaluate just these runs (their parents are retrained if gone), e.g. in parallel processes.
    """
    plan = {r.name: r for r in build_plan(spec)}
    data = None if report_only else open_test_data(spec)
    results = {}
    for run in plan.values():
        if only is not None and run.name not in only:
            continue
        done = load_result(spec, run)
        if done is None and not report_only:
            ensure_parents(spec, run, plan, progress)
            train_run(spec, run, progress)
            evaluate_run(spec, run, data)
            done = load_result(spec, run)
            e = done["eval"]
            print(
                f"study: {run.name}: {spec.test_name} top-1 error {100 * e['single/dense']['top1_err']:.2f}% "
                f"(single scale), {100 * e['multi/dense']['top1_err']:.2f}% (multi-scale)",
                file=sys.stderr,
                flush=True,
            )
        if done is not None:
            results[run.name] = done
    if not report_only:  # a parent retrained for a later run has a new retrain record
        for name, r in results.items():
            r["retrains"] = retrain_errors(summary_dir(spec, name))
    return results


__all__ = ["JITTERED", "run_config", "run_study"]
