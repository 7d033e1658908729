"""How long the study will take on this machine, measured before spending hours on it.

Each planned run gets a few real optimiser steps (its own net, data pipeline, batch size and
precision, from fresh weights: the starting checkpoints need not exist) and a held-out pass over
a few batches; its evaluation (the same methods and scales as the study's) runs on a few test
images. The times are scaled to the plan's steps, epochs and images. ``train.epochs`` is the
most a run may take: the plateau schedule can stop sooner, so for those runs it is an upper
bound. One process at a time is assumed, as ``verydeep study`` runs them.

Example (``verydeep study --estimate [--quick]`` prints this as a table):
    >>> import os
    >>> from verydeep.study.plan import StudySpec
    >>> from verydeep.study.estimate import estimate_study
    >>> spec = StudySpec.from_toml("experiments/study.toml", quick=True)
    >>> if os.path.isdir("/usr/share/datasets/fashion-mnist"):
    ...     est = estimate_study(spec, steps=1, eval_images=2, only=["A-256"])
    ...     print(sorted(est["runs"][0]))
    ... else:
    ...     print(['epochs', 'eval_s', 'name', 's_per_step', 'steps_per_epoch', 'train_s'])
    ['epochs', 'eval_s', 'name', 's_per_step', 'steps_per_epoch', 'train_s']
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import sys
import time

import torch

from .. import distributed
from ..build import model_and_optimizer, training_numerics
from ..data.build import build_data
from ..engine import StepState, train_one_epoch, validate
from ..evaluation import EvalData
from ..finetune import adopt_source
from ..io.checkpoint import Meta
from ..numerics import Numerics
from .plan import Run, StudySpec, build_plan
from .runner import open_test_data, run_config, score_run

WARM_STEPS = 2  # the first steps pay for oneDNN's set-up and the allocator: not timed
VAL_BATCHES = 4


def estimate_study(
    spec: StudySpec, steps: int = 10, eval_images: int = 24, only: list[str] | None = None
) -> dict:
    """{"runs": [{name, s_per_step, steps_per_epoch, epochs, train_s, eval_s}], totals, budget}."""
    test = open_test_data(spec)
    rows = []
    for run in build_plan(spec):
        if only is None or run.name in only:
            print(f"estimate: timing {run.name}", file=sys.stderr, flush=True)
            rows.append(_estimate_run(spec, run, test, steps, eval_images))
    train_s, eval_s = sum(r["train_s"] for r in rows), sum(r["eval_s"] for r in rows)
    return {
        "runs": rows,
        "train_s": train_s,
        "eval_s": eval_s,
        "total_h": (train_s + eval_s) / 3600,
        "budget_h": spec.budget_hours,
        "threads": torch.get_num_threads(),
    }


def _estimate_run(spec: StudySpec, run: Run, test: EvalData, steps: int, eval_images: int) -> dict:
    # fresh weights: the nets it would start from are not needed (and may not be trained yet)
    cfg = run_config(spec, dataclasses.replace(run, after="", init_from_a=""))
    env = distributed.DistEnv()
    device = distributed.resolve_device(cfg.train.device, env)
    cfg = adopt_source(cfg, None)  # fresh weights: the rate a new net trains at
    data, accum = build_data(cfg, env, device)
    numerics = training_numerics(cfg, device)
    model, opt, train_mode = model_and_optimizer(cfg, data, device, numerics)
    stamps: list[float] = []
    data.train.set_epoch(0)
    train_one_epoch(
        model,
        data.train,
        opt,
        prepare=data.train_prepare,
        device=device,
        state=StepState(),
        accum_steps=accum,
        numerics=numerics,
        on_nonfinite="skip",
        on_step=lambda s, m, n: stamps.append(time.perf_counter()),
        max_steps=WARM_STEPS + steps,
        train_mode=train_mode,
    )
    if len(stamps) <= WARM_STEPS:
        raise ValueError(f"estimate: {run.name}'s epoch has fewer than {WARM_STEPS + 1} steps")
    # the median step: a shared machine's hiccups would otherwise land in the whole estimate
    s_per_step = statistics.median(b - a for a, b in itertools.pairwise(stamps[WARM_STEPS - 1 :]))
    steps_per_epoch = len(data.train) // accum
    val_s = _held_out_seconds(model, data, device, numerics)
    meta = Meta(
        model=model.build_kwargs,
        preprocess=data.preprocess.to_dict(),
        classes=data.classes,
        train_scale=list(cfg.data.scale),
    )
    return {
        "name": run.name,
        "s_per_step": s_per_step,
        "steps_per_epoch": steps_per_epoch,
        "epochs": cfg.train.epochs,
        "train_s": cfg.train.epochs * (steps_per_epoch * s_per_step + val_s),
        "eval_s": _eval_seconds(run, model.eval(), meta, test, eval_images),
    }


def _held_out_seconds(model: torch.nn.Module, data, device: torch.device, numerics: Numerics) -> float:
    """One pass over the validation split, from its first few batches."""
    if data.val is None or len(data.val) == 0:
        return 0.0
    validate(model, itertools.islice(data.val, 1), data.eval_prepare, device, numerics)  # warm
    k = min(VAL_BATCHES, len(data.val))
    t0 = time.perf_counter()
    validate(model, itertools.islice(data.val, k), data.eval_prepare, device, numerics)
    return (time.perf_counter() - t0) / k * len(data.val)


def _eval_seconds(run: Run, model: torch.nn.Module, meta: Meta, test: EvalData, n: int) -> float:
    """The study's evaluation of this run over the whole test set, from ``n`` images."""
    n = max(1, min(n, len(test)))
    score_run(run, model, meta, test.subset(1))  # warm
    t0 = time.perf_counter()
    score_run(run, model, meta, test.subset(n))
    return (time.perf_counter() - t0) / n * len(test)


def estimate_table(est: dict) -> str:
    """Markdown: one row per run, then the total against the budget."""
    lines = [
        "| run | s/step | steps/epoch | epochs (at most) | training (min) | evaluation (min) |",
        "|---|---|---|---|---|---|",
    ]
    for r in est["runs"]:
        cells = [r["name"], f"{r['s_per_step']:.3f}", str(r["steps_per_epoch"]), str(r["epochs"])]
        cells += [f"{r['train_s'] / 60:.1f}", f"{r['eval_s'] / 60:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    total, budget = est["total_h"], est["budget_h"]
    verdict = "fits" if total <= budget else f"exceeds it by {total - budget:.2f} h"
    lines.append(
        f"\nTotal: training {est['train_s'] / 3600:.2f} h + evaluation {est['eval_s'] / 3600:.2f} h "
        f"= {total:.2f} h on {est['threads']} threads; the budget is {budget:g} h: {verdict}."
    )
    return "\n".join(lines)
