"""Run a fine-tuning study (``study/finetune_plan.py``): every row on every data set, resumable.

Each run's weights live in ``<out_dir>/<dataset>/<row>/`` (outside the repository); its summary
goes to ``<results_dir>/<dataset>/<row>/``: ``finetune.json`` (accuracy on the test split, every
test photo's prediction and label, CPU and wall time) and, for trained rows, the run's
``config.json``, ``log.csv`` and ``result.json``. A rerun skips every run with a summary, so the
study survives interruption and a new machine. The starts (the random net, each format written
out and read back) are made once under ``<out_dir>/starts/``; ``starts.json`` beside the
summaries says how closely each import reproduces the source's outputs.

Example:
    >>> from verydeep.study.finetune_plan import FinetuneSpec, plan_runs
    >>> from verydeep.study.finetune_runner import train_overrides
    >>> import tempfile
    >>> photos = tempfile.mkdtemp()  # a folder of class folders: an ImageFolder
    >>> spec = FinetuneSpec(source="src.safetensors", base=["train.epochs=3"],
    ...                     datasets=[{"name": "hym", "root": photos}],
    ...                     rows=[{"name": "all", "start": "source"}])
    >>> keys = train_overrides(spec, plan_runs(spec)[0], "src.safetensors")
    >>> [k for k in keys if "init_from" in k or "epochs" in k]
    ['train.epochs=3', 'train.init_from=src.safetensors']
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..data.build import dataset_kind
from ..evaluation import EvalOptions, evaluate_models, open_data
from ..features import DescriptorConfig, describe_paths
from ..io import study_results as summary
from ..io.checkpoint import load_model, read_meta
from ..io.files import atomic_write
from ..io.weights.convert import convert
from ..io.weights.weights_out import write_weights
from ..train import fit
from ..transfer import SVMConfig, mean_class_recall, train_and_test
from .finetune_plan import IMPORTS, FinetuneSpec, PlannedRun, plan_runs, repeats
from .plans import existing_source, untrained_twin

SHAPE = ("arch", "width_mult", "fc_width", "crop_size", "in_channels")


def check_source(spec: FinetuneSpec) -> None:
    existing_source(spec.source, spec.source_command, "finetune_study source")


def make_starts(spec: FinetuneSpec) -> dict[str, str]:
    """{start: checkpoint path} for every start the rows use (made once); ``scratch`` has none."""
    used = {r.start for r in spec.rows}
    starts = Path(spec.out_dir) / "starts"
    paths = {"source": spec.source}
    if "random" in used:
        paths["random"] = untrained_twin(spec.source, starts / "random.safetensors")
    for fmt in sorted(used & set(IMPORTS)):
        paths[fmt] = str(starts / f"from-{fmt}.safetensors")
        if not Path(paths[fmt]).is_file():
            written = starts / f"source.{fmt}"
            write_weights(spec.source, written)  # verydeep export
            convert(written, paths[fmt])  # verydeep convert, as a user reads the file back
    return paths


def import_fidelity(spec: FinetuneSpec, starts: dict[str, str]) -> dict[str, dict]:
    """For each import: its input convention and the largest |logit difference| from the source
    on 16 random 0-255 images, each net fed in its own convention."""
    src, src_meta = load_model(spec.source)
    g = torch.Generator().manual_seed(0)
    c = src.crop_size
    x = torch.randint(0, 256, (16, src.in_channels, c, c), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        ref = src(src_meta.prep(x))
        out = {}
        for fmt in (f for f in IMPORTS if f in starts):
            net, meta = load_model(starts[fmt])
            diff = (net(meta.prep(x)) - ref).abs().max().item()
            out[fmt] = {
                "input": meta.prep.describe(),
                "max_abs_logit_diff": diff,
                "logit_scale": ref.abs().max().item(),
            }
    return out


def source_record(spec: FinetuneSpec) -> dict:
    """What the source's own run directory says of it, where it is one: its data, the epochs it
    trained, its best held-out error and (a finished study run) its evaluation errors; only its
    shape for an imported file."""
    run = Path(spec.source).parents[1]
    out: dict = {"meta": read_meta(spec.source).model}
    config, log = summary.read_json(run / "config.json"), summary.read_log(run / "log.csv")
    out |= {"data": config.get("data", {}).get("root")} if config else {}
    if log:
        out["epochs"] = int(log[-1]["epoch"])
        out["held_out_err"] = min((r["val_err"] for r in log if "val_err" in r), default=None)
    evaluation = summary.read_json(run / "eval.json") or {}
    out["top1_err"] = {k: v["top1_err"] for k, v in evaluation.items() if isinstance(v, dict)}
    return out


def train_overrides(spec: FinetuneSpec, run: PlannedRun, start: str | None) -> list[str]:
    """The config keys of a trained row: data set, ``base``, the data set's and the row's keys."""
    root = run.dataset.root
    o = [f"data.dataset={dataset_kind(root)}", f"data.root={root}"]
    o += [f"data.test_split={spec.test_split}"] if spec.test_split != "val" else []
    o += [*spec.base, *run.dataset.set, *run.row.set, f"train.seed={run.seed}", "train.eval_test=false"]
    o.append(f"train.out_dir={run_dir(spec, run)}")
    if start is not None:
        return [*o, f"train.init_from={start}"]
    shape = read_meta(spec.source).model  # from scratch, in the source's shape
    return [*o, *(f"model.{k}={shape[k]}" for k in SHAPE if k in shape)]


def run_dir(spec: FinetuneSpec, run: PlannedRun) -> Path:
    return Path(spec.out_dir) / run.name


def summary_dir(spec: FinetuneSpec, run: PlannedRun) -> Path:
    return Path(spec.results_dir or spec.out_dir) / run.name


def _scored(pred: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    return {
        "accuracy": float((pred == labels).mean()),
        "n": len(labels),
        "mean_class_recall": mean_class_recall(labels, pred, len(classes))[0],
        "pred": pred.tolist(),
        "labels": labels.tolist(),
        "classes": list(classes),
    }


def train_row(spec: FinetuneSpec, run: PlannedRun, start: str | None, progress: bool) -> dict:
    """Train the row, then score its held-out-best weights on the test split (single scale, dense)."""
    cfg = RunConfig.from_sources(overrides=train_overrides(spec, run, start))
    result = fit(cfg, progress=progress)
    model, meta = load_model(run_dir(spec, run) / "checkpoints" / "best.safetensors")
    data = open_data(run.dataset.root, meta.classes, split=spec.test_split)
    opts = EvalOptions(methods=["dense"], scales="single", progress=False, workers=1, precision="auto")
    res = evaluate_models([(run.name, model, meta)], data, opts)
    probs = res["posteriors"][(run.name, "dense")]
    out = _scored(probs.argmax(1).numpy(), np.asarray(res["labels"]), meta.classes)
    resolved = summary.read_json(run_dir(spec, run) / "config.json") or {}  # optim.lr 0 made a rate
    lr = resolved.get("optim", {}).get("lr", cfg.optim.lr)
    return out | {"epochs": result.get("epochs"), "lr": lr, "layers": cfg.finetune.layers}


def svm_row(spec: FinetuneSpec, run: PlannedRun, start: str) -> dict:
    """Appendix B: FC7 descriptors of the start (scales ``svm_scales``), one-vs-rest linear SVMs."""
    model, meta = load_model(start)
    train = open_data(run.dataset.root, split="train")
    test = open_data(run.dataset.root, train.classes, split=spec.test_split)
    cfg = DescriptorConfig(scales=tuple(spec.svm_scales))
    feats = {}
    for name, data in (("train", train), ("test", test)):
        paths, labels = zip(*data.samples, strict=True)
        x, kept = describe_paths(model, meta.prep, list(paths), cfg)
        feats[name] = (x.numpy(), np.asarray(labels)[kept], kept, np.asarray(labels))
    xtr, ytr, _, _ = feats["train"]
    xte, yte, kept, all_labels = feats["test"]
    r = train_and_test(xtr, ytr, xte, yte, len(train.classes), SVMConfig(seed=run.seed))
    pred = np.full(len(all_labels), -1)  # a test photo that could not be read counts as wrong
    pred[kept] = r["pred"]
    return _scored(pred, all_labels, train.classes) | {"C": r["C"], "svm_scales": spec.svm_scales}


def do_run(spec: FinetuneSpec, run: PlannedRun, starts: dict[str, str], progress: bool) -> dict:
    """Run one row on one data set unless its summary exists; returns the summary."""
    dest = summary_dir(spec, run)
    done = summary.read_json(dest / "finetune.json")
    if done is not None:
        return done
    print(f"finetune_study: {run.name} ({run.row.method} from {run.row.start})", file=sys.stderr, flush=True)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    start = starts.get(run.row.start)
    if run.row.method == "svm":
        out = svm_row(spec, run, start)
    else:
        out = train_row(spec, run, start, progress)
        if spec.results_dir:
            summary.copy_run_files(run_dir(spec, run), dest)
    out |= {"start": run.row.start, "method": run.row.method, "seed": run.seed}
    out |= {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0}
    atomic_write(dest / "finetune.json", json.dumps(out).encode())
    print(f"finetune_study: {run.name}: accuracy {100 * out['accuracy']:.1f}% of {out['n']}", file=sys.stderr)
    return out


def run_finetune_study(spec: FinetuneSpec, progress: bool = True, report_only: bool = False) -> dict:
    """Every planned run, then the repeats of the best rows; returns {run name: summary} and
    ``starts.json``'s fidelity numbers under the key ``"starts"``. ``report_only``: collect only."""
    results: dict = {}
    if not report_only:
        check_source(spec)
        starts = make_starts(spec)
        fidelity = import_fidelity(spec, starts) | {"source": source_record(spec)}
        atomic_write(
            Path(spec.results_dir or spec.out_dir) / "starts.json", json.dumps(fidelity, indent=1).encode()
        )
        done = {run.name: do_run(spec, run, starts, progress)["accuracy"] for run in plan_runs(spec)}
        for run in repeats(spec, done):
            do_run(spec, run, starts, progress)
    # every run with a summary, repeats included (also of rows that were best in an earlier pass)
    seeds = [0, *spec.repeat_seeds]
    for run in (PlannedRun(d, r, s) for s in seeds for d in spec.datasets for r in spec.rows):
        if (found := summary.read_json(summary_dir(spec, run) / "finetune.json")) is not None:
            results[run.name] = found
    results["starts"] = summary.read_json(Path(spec.results_dir or spec.out_dir) / "starts.json") or {}
    return results
