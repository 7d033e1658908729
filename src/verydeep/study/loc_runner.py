"""Run a localisation plan (``study/loc_study.py``): what has no summary yet, in plan order.

Each step calls what its command calls: ``train.fit`` (``verydeep train``) for a classifier,
``fit_localizer`` (``localize train``), ``tune_merging`` (``localize tune``) and
``evaluate_boxes`` (``localize eval``), with the settings the tune summary chose.

Example:
    >>> from verydeep.study.loc_study import LocSpec
    >>> from verydeep.study.loc_runner import classifier_overrides
    >>> spec = LocSpec(data="voc", classifiers=[{"name": "S", "set": ["model.arch=D_bn"]}],
    ...                runs=[{"name": "r", "classifier": "S"}], classifier_base=["train.epochs=90"])
    >>> classifier_overrides(spec, spec.classifiers[0])[4:]
    ['train.epochs=90', 'model.arch=D_bn', 'train.out_dir=runs/loc-study/classifiers/S']
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..config import RunConfig
from ..io import study_results as summary
from ..io.checkpoint import read_meta, save_model
from ..io.files import atomic_write
from ..localization.api import evaluate_boxes, fit_localizer, parse_scales, step_bar, tune_merging
from ..localization.net import LocTrainConfig
from ..localization.tune import dense_config
from ..train import fit
from .loc_study import Candidate, Classifier, LocSpec, candidates
from .plans import existing_source

SHAPE = ("arch", "width_mult", "fc_width", "crop_size")


def classifier_overrides(spec: LocSpec, c: Classifier) -> list[str]:
    """A classifier's training keys: the VOC set, ``classifier_base``, its source's shape and
    weights at a tenth of the rate (fine-tuning), then its own ``set``."""
    o = ["data.dataset=voc", f"data.root={spec.data}", f"data.train_split={spec.fit_split}"]
    o += [f"data.test_split={spec.report_split}", *spec.classifier_base]
    if c.source:
        source = existing_source(c.source, c.command, f"localization_study classifier {c.name}")
        shape = read_meta(source).model
        o += [f"model.{k}={shape[k]}" for k in SHAPE] + [f"train.init_from={source}", "optim.lr=0.001"]
    return [*o, *c.set, f"train.out_dir={Path(spec.out_dir) / 'classifiers' / c.name}"]


def classifier(spec: LocSpec, name: str, progress: bool) -> str:
    """The classifier's best checkpoint, trained first where it is missing."""
    run = Path(spec.out_dir) / "classifiers" / name
    best = run / "checkpoints" / "best.safetensors"
    if not best.is_file():
        c = next(c for c in spec.classifiers if c.name == name)
        print(f"localization_study: classifier {name}", file=sys.stderr, flush=True)
        fit(RunConfig.from_sources(overrides=classifier_overrides(spec, c)), progress=progress)
        if spec.results_dir:
            summary.copy_run_files(run, Path(spec.results_dir) / "classifiers" / name)
    return str(best)


def box_net(spec: LocSpec, run_name: str, net: str, progress: bool) -> str:
    """A box net's checkpoint, trained first where it is missing (``boxes_from``: that run's)."""
    run = spec.run(run_name)
    if run.boxes_from:
        return box_net(spec, run.boxes_from, net, progress)
    path = Path(spec.out_dir) / run.name / f"{net}.safetensors"
    if not path.is_file():
        head, layers = net.split("-")
        steps = run.steps_fc if layers == "fc" and run.steps_fc else run.steps
        cfg = LocTrainConfig(head=head, finetune=layers, steps=steps, lr=run.lr, lr_drops=run.lr_drops,
                             box_size=run.box_size, seed=run.seed)  # fmt: skip
        print(f"localization_study: box net {run.name}/{net}", file=sys.stderr, flush=True)
        cls = classifier(spec, run.classifier, progress)
        bar = step_bar(cfg.steps, f"{run.name}/{net}", progress)
        model, meta, _ = fit_localizer(spec.data, cls, cfg, bar, split=spec.fit_split)
        save_model(path, model, meta)
    return str(path)


def do_candidate(spec: LocSpec, cand: Candidate, progress: bool) -> tuple[dict, dict]:
    """Tune on choose_split, then report on report_split with the tuned settings; each summary
    is written as it is made, so a stop between them keeps the tuning."""
    folder = Path(spec.results_dir or spec.out_dir) / cand.folder
    locs = [box_net(spec, run, net, progress) for run, net in cand.locs]
    cls = [classifier(spec, name, progress) for name in cand.score]
    tune_path = folder / f"tune-{cand.net}.json"
    tuned = summary.read_json(tune_path)
    if tuned is None:
        print(f"localization_study: tune {cand.name}", file=sys.stderr, flush=True)
        sets = [parse_scales(s) for s in spec.scale_sets]
        flips, bar = [False, True] if spec.flip else [False], step_bar(0, f"tune {cand.name}", progress)
        tuned = tune_merging(spec.data, spec.choose_split, locs, cls, sets, flips, bar)
        atomic_write(tune_path, json.dumps(tuned, indent=1).encode())
    val = report(spec, locs, cls, tuned["best"]["flags"], folder / f"val-{cand.net}.json", progress)
    return tuned, val


def report(spec: LocSpec, locs: list[str], cls: list[str], flags: str, dest: Path, progress: bool) -> dict:
    """``localize eval`` on report_split with ``flags`` (a tune row's; "": the defaults), to ``dest``."""
    what = f"{dest.parent.name}/{dest.stem.removeprefix('val-')} on {spec.report_split}"
    print(f"localization_study: {what}", file=sys.stderr, flush=True)
    cfg, bar = dense_config(flags), step_bar(0, what, progress)
    val = evaluate_boxes(spec.data, spec.report_split, locs, cls, cfg, bar, train_split=spec.fit_split)
    atomic_write(dest, json.dumps(val, indent=1).encode())
    return val


def run_defaults(spec: LocSpec, run_name: str, progress: bool) -> None:
    """scr-all with the default merging (``localize eval`` without tuned flags), for comparison."""
    run = spec.run(run_name)
    locs = [box_net(spec, run.name, "scr-all", progress)]
    cls = [classifier(spec, name, progress) for name in run.score or (run.classifier,)]
    dest = Path(spec.results_dir or spec.out_dir) / run.name / "val-scr-all-defaults.json"
    report(spec, locs, cls, "", dest, progress)


def entry_names(spec: LocSpec) -> list[str]:
    """What ``--only`` names: the runs with candidates and the fusions."""
    return [r.name for r in spec.runs if r.candidates] + [f.name for f in spec.fusions]


def run_plan(
    spec: LocSpec, progress: bool = True, report_only: bool = False, only: list[str] | None = None
) -> dict[str, dict]:
    """Every candidate without both summaries (unless ``report_only``; ``only``: of those runs
    and fusions); {candidate name: {"tune", "val"}} of every candidate with both, and
    {run/scr-all-defaults: {"val"}}."""
    out: dict[str, dict] = {}
    root = Path(spec.results_dir or spec.out_dir)
    for cand in candidates(spec):
        if only is not None and cand.folder not in only:
            continue
        tuned = summary.read_json(root / cand.folder / f"tune-{cand.net}.json")
        val = summary.read_json(root / cand.folder / f"val-{cand.net}.json")
        if (tuned is None or val is None) and not report_only:
            tuned, val = do_candidate(spec, cand, progress)
        if tuned is not None and val is not None:
            out[cand.name] = {"tune": tuned, "val": val, "candidate": cand}
    for run in (r for r in spec.runs if r.defaults and r.candidates and "scr-all" in r.nets):
        if only is not None and run.name not in only:
            continue
        path = root / run.name / "val-scr-all-defaults.json"
        if not path.is_file() and not report_only:
            run_defaults(spec, run.name, progress)
        if path.is_file():
            out[f"{run.name}/scr-all-defaults"] = {"val": summary.read_json(path)}
    return out
