"""Data-parallel plans (``[ddp_study]``): one training config run under ``torchrun`` once per row
and seed, each row a set of config keys (e.g. ``dist.grad_comm``), and a table of their test
errors with the spread over seeds.

Each run trains in ``<out_dir>/<row>-s<seed>/`` (outside the repository) as
``python -m torch.distributed.run --standalone --nproc_per_node=N -m verydeep train --config
CONFIG --set ...``; its summary (``config.json``, ``log.csv``, ``result.json``) goes to
``<results_dir>/<row>-s<seed>/``. A rerun skips every run with a summary.

Example:
    >>> from verydeep.study.ddp_study import DdpSpec, launch_command
    >>> spec = DdpSpec(config="q.toml", rows=[{"name": "fp16", "set": ["dist.grad_comm=fp16"]}])
    >>> launch_command(spec, spec.rows[0], 0)[-4:]
    ['--set', 'train.seed=0', '--set', 'train.out_dir=runs/ddp-study/fp16-s0']
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..io import study_results as summary
from .plans import read_table

BEGIN, END = "<!-- ddp-study results: begin -->", "<!-- ddp-study results: end -->"


@dataclass
class DdpSpec:
    config: str  # the training config every row starts from
    rows: list[dict] = field(default_factory=list)  # {name, label, set: [keys], seeds: [ints]}
    title: str = "Data-parallel study"
    nproc_per_node: int = 2
    base: list[str] = field(default_factory=list)  # keys every run gets
    out_dir: str = "runs/ddp-study"
    results_dir: str = ""
    report: str = ""
    hardware: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.nproc_per_node <= 1024:
            raise ValueError(f"ddp_study.nproc_per_node must be in [1, 1024], got {self.nproc_per_node}")
        names = [r.get("name") for r in self.rows]
        if not names or None in names or len(set(names)) != len(names):
            raise ValueError("ddp_study.rows: each row needs a name, names unique, at least one row")
        for r in self.rows:
            unknown = set(r) - {"name", "label", "set", "seeds"}
            if unknown:
                raise ValueError(f"ddp_study row {r['name']!r}: unknown key(s) {sorted(unknown)}")

    @classmethod
    def from_toml(cls, path: str | Path, quick: bool = False) -> DdpSpec:
        return cls(**read_table(path, "ddp_study", cls.__dataclass_fields__, quick, needs=("config",)))


Spec = DdpSpec  # the name every plan module gives its spec (cli/plan_study.py)


def runs(spec: DdpSpec) -> list[tuple[dict, int]]:
    return [(r, s) for r in spec.rows for s in r.get("seeds", [0])]


def launch_command(spec: DdpSpec, row: dict, seed: int) -> list[str]:
    """The torchrun command of one run (argv after the Python executable)."""
    keys = [*spec.base, *row.get("set", []), f"train.seed={seed}"]
    name = f"{row['name']}-s{seed}"
    keys.append(f"train.out_dir={Path(spec.out_dir).expanduser() / name}")
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec.nproc_per_node}"]
    train = ["-m", "verydeep", "train", "--config", spec.config, "--no-progress"]
    return [*launch, *train, *[a for k in keys for a in ("--set", k)]]


def run_plan(spec: DdpSpec, progress: bool = True, report_only: bool = False) -> dict[str, dict]:
    """Train every run without a summary (unless ``report_only``); {run: result.json and log}.
    ``progress`` is unused: each torchrun prints its own log lines."""
    out = {}
    for row, seed in runs(spec):
        name = f"{row['name']}-s{seed}"
        dest = Path(spec.results_dir or spec.out_dir) / name
        if summary.read_json(dest / "result.json") is None and not report_only:
            print(f"ddp study: {name}", file=sys.stderr, flush=True)
            rc = subprocess.run([sys.executable, *launch_command(spec, row, seed)]).returncode
            if rc != 0:
                raise ValueError(f"ddp study: run {name} failed (exit {rc}); see its output above")
            summary.copy_run_files(Path(spec.out_dir).expanduser() / name, dest)
        result = summary.read_json(dest / "result.json")
        if result is not None:
            out[name] = {"result": result, "log": summary.read_log(dest / "log.csv"), "row": row["name"]}
    return out


def render_block(spec: DdpSpec, results: dict[str, dict], command: str) -> str:
    """The results block: one line per run, then per row the mean test error and its spread."""
    lines = [BEGIN, "", f"`{command}` ({spec.nproc_per_node} ranks; {spec.hardware or 'this machine'}):", ""]
    lines += ["| run | epochs | test error | wall time |", "|---|---|---|---|"]
    per_row: dict[str, list[float]] = {}
    for name, r in results.items():
        err = r["result"]["test"]["top1_err"]
        per_row.setdefault(r["row"], []).append(err)
        wall = sum(row.get("seconds", 0.0) for row in r["log"])
        lines.append(f"| {name} | {r['result']['epochs']} | {100 * err:.2f}% | {wall / 60:.1f} min |")
    lines += ["", "| row | seeds | mean test error | spread (max - min) |", "|---|---|---|---|"]
    for row, errs in per_row.items():
        spread = f"{100 * (max(errs) - min(errs)):.2f} points" if len(errs) > 1 else "one seed"
        lines.append(f"| {row} | {len(errs)} | {100 * statistics.fmean(errs):.2f}% | {spread} |")
    n = next((r["result"]["test"].get("images") for r in results.values()), None)
    if n:
        e = statistics.fmean(r["result"]["test"]["top1_err"] for r in results.values())
        lines += ["", f"One binomial standard error on {n:,} test images at {100 * e:.1f}%: "
                  f"{100 * math.sqrt(e * (1 - e) / n):.2f} points."]  # fmt: skip
    return "\n".join([*lines, "", END])
