"""The study of Section 4, as data: which nets to train, from what, at which scales.

The chain follows the paper: net A from scratch at S=256; the other configs at S=256 initialised
from A (first four convs + FC layers); every S=384 net fine-tuned from its S=256 net at lr 1e-3;
the jittered C, D, E fine-tuned from their S=384 nets. Extra runs: D from scratch with Glorot
(the authors' later finding) and repeats of D at S=256 with other seeds (the noise level).
Beyond the grid, ``[[study.extra]]`` tables in the study TOML add runs of their own (e.g. nets
trained longer than the grid's budget allows for each of its nets); they take part in the targets
and the ensembles, not in Tables 3-5.

Example:
    >>> from verydeep.study.plan import StudySpec, build_plan
    >>> runs = build_plan(StudySpec())
    >>> [r.name for r in runs][:3], len(runs)
    (['A-256', 'A-LRN-256', 'B-256'], 18)
    >>> next(r for r in runs if r.name == "D-jit").after
    'D-384'
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

CONFIGS = ["A", "A-LRN", "B", "C", "D", "E"]
JITTERED = ["C", "D", "E"]


@dataclass
class StudySpec:
    out_dir: str = "runs/study"
    report: str = "docs/RESULTS.md"
    notes: str = ""  # Markdown file whose text the report includes after the targets (discussion)
    base: list[str] = field(default_factory=list)  # --set style overrides applied to every run
    scratch_epochs: int = 12
    finetune_epochs: int = 4
    finetune_lr: float = 1e-3
    scratch_init: str = "glorot"
    repeat_seeds: list[int] = field(default_factory=lambda: [1, 2])
    test_limit: int = 0  # evaluate on this many test images (0: all 10,000)
    budget_hours: float = 4.0  # what the whole study may take; ``--estimate`` checks it
    quick: bool = False
    # runs beyond the grid: {name, arch, scale=[256], set=[overrides], after="", init_from_a=""}
    extra: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        allowed = {"name", "arch", "scale", "set", "after", "init_from_a"}
        for e in self.extra:
            if not {"name", "arch"} <= set(e) or set(e) - allowed:
                raise ValueError(f"study.extra: a run needs name and arch, and only {sorted(allowed)}: {e}")

    @classmethod
    def from_toml(cls, path: str | Path, quick: bool = False) -> StudySpec:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"study config not found: {p}")
        with p.open("rb") as fh:
            d = tomllib.load(fh)
        study = dict(d.get("study", {}))
        if quick:
            study |= d.get("quick", {})
        base = [f"{sec}.{k}={_toml_value(v)}" for sec, kv in d.get("base", {}).items() for k, v in kv.items()]
        base += study.pop("base", [])
        return cls(base=base, quick=quick, **study)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return repr(v) if isinstance(v, list) else str(v)


@dataclass
class Run:
    name: str
    arch: str
    scale: list[int]
    overrides: list[str]
    after: str = ""  # run whose best checkpoint this one starts from
    init_from_a: str = ""  # run providing net A for the paper's initialisation
    group: str = "main"  # main | init | repeat | extra


def build_plan(spec: StudySpec) -> list[Run]:
    scratch = [f"train.epochs={spec.scratch_epochs}", f"model.init={spec.scratch_init}"]
    tune = [f"train.epochs={spec.finetune_epochs}", f"optim.lr={spec.finetune_lr}"]
    runs = [Run("A-256", "A", [256], scratch)]
    for c in CONFIGS[1:]:
        runs.append(Run(f"{c}-256", c, [256], scratch, init_from_a="A-256"))
    for c in CONFIGS:
        runs.append(Run(f"{c}-384", c, [384], tune, after=f"{c}-256"))
    for c in JITTERED:
        runs.append(Run(f"{c}-jit", c, [256, 512], tune, after=f"{c}-384"))
    runs.append(Run("D-256-glorot", "D", [256], [*scratch[:1], "model.init=glorot"], group="init"))
    for s in spec.repeat_seeds:
        seeded = [*scratch, f"train.seed={s}"]
        runs.append(Run(f"D-256-seed{s}", "D", [256], seeded, init_from_a="A-256", group="repeat"))
    for e in spec.extra:
        o = [*e.get("set", []), *([f"train.epochs={spec.scratch_epochs}"] if spec.quick else [])]
        after, init_a = e.get("after", ""), e.get("init_from_a", "")
        runs.append(Run(e["name"], e["arch"], list(e.get("scale", [256])), o, after, init_a, "extra"))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"study: run names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return runs
