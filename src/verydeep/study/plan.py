"""The study of Section 4, as data: which nets to train, from what, at which scales.

The chain follows the paper: nets A and A-LRN from random weights (A-LRN has A's depth, so the
paper's Table 3 trains it from scratch too); B-E at the small S initialised from A (first four
convs + FC layers); every large-S net fine-tuned from its small-S net at ``finetune_lr``; the
jittered C, D, E fine-tuned from their large-S nets. Extra runs: D from scratch with Glorot
(the authors' later finding) and repeats of chosen nets with other seeds (the noise level).
Beyond the grid, ``[[study.extra]]`` tables in the study TOML add runs of their own (e.g. nets
trained longer than the grid's budget allows for each of its nets); they take part in the targets
and the ensembles, not in Tables 3-5. An extra with ``group = "reference"`` is a peer recipe
(torchvision's), reported beside the paper's, never chosen for the targets.

Example:
    >>> from verydeep.study.plan import StudySpec, build_plan
    >>> runs = build_plan(StudySpec())
    >>> [r.name for r in runs][:3], len(runs)
    (['A-256', 'A-LRN-256', 'B-256'], 18)
    >>> by_name = {r.name: r for r in runs}
    >>> by_name["D-jit"].after, by_name["A-LRN-256"].init_from_a, by_name["B-256"].init_from_a
    ('D-384', '', 'A-256')
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

CONFIGS = ["A", "A-LRN", "B", "C", "D", "E"]
JITTERED = ["C", "D", "E"]
# The paper's S = 256, 384 and [256, 512] in its units (pixels at a 224 crop); every run scales them
# by crop/224 (config.pixels), so at crop 64 they are 73, 110 and [73, 146] px.
SCALES, JITTER = (256, 384), (256, 512)
FROM_SCRATCH = ["A", "A-LRN"]  # the rest of the grid's small-S nets start from net A
EXTRA_KEYS = {"name", "arch", "scale", "set", "after", "init_from_a", "group"}


@dataclass
class StudySpec:
    """One study: the data, the grid's budget, the targets, where runs and summaries go."""

    title: str = "Fashion-MNIST"  # the report's heading names the data set
    test_data: str = "fashion-mnist"  # what the report is on: fashion-mnist or a class-folder path
    test_name: str = "test"  # what the report calls that split (Imagewoof's is "val")
    out_dir: str = "runs/study"  # run directories (weights; "~" allowed)
    results_dir: str = ""  # committed summaries per run (no weights); "" keeps none
    report: str = "docs/RESULTS.md"
    notes: str = ""  # Markdown file of how the numbers came about, which the report links to
    hardware: str = ""  # what the runs ran on, as the report states it
    base: list[str] = field(default_factory=list)  # --set style overrides applied to every run
    scratch_epochs: int = 12
    finetune_epochs: int = 4
    finetune_lr: float = 1e-3
    finetune_set: list[str] = field(default_factory=list)  # more overrides for fine-tuning stages
    scratch_init: str = "glorot"
    repeat_runs: list[str] = field(default_factory=lambda: ["D-256"])  # retrained with other seeds
    repeat_seeds: list[int] = field(default_factory=lambda: [1, 2])
    test_limit: int = 0  # evaluate on this many test images (0: all)
    reference_note: str = ""  # published numbers on the same data, quoted beside the centre-crop line
    class_names: dict[str, str] = field(default_factory=dict)  # folder name -> readable name (figures)
    target_single: float = 0.945  # accuracy the best single net (chosen on held-out data) must reach
    target_ensemble: float = 0.95
    budget_hours: float = 4.0  # what the whole study may take; ``--estimate`` checks it
    quick: bool = False
    # runs beyond the grid: {name, arch, scale=[256], set=[overrides], after="", init_from_a="", group}
    extra: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        for e in self.extra:
            if not {"name", "arch"} <= set(e) or set(e) - EXTRA_KEYS:
                raise ValueError(
                    f"study.extra: a run needs name and arch, and only {sorted(EXTRA_KEYS)}: {e}"
                )
            if e.get("group", "extra") not in ("extra", "reference"):
                raise ValueError(f"study.extra: group must be extra or reference, got {e['group']!r}")
        if not 0 < self.target_single <= 1 or not 0 < self.target_ensemble <= 1:
            raise ValueError("study: targets are accuracies in (0, 1]")
        if self.scratch_epochs < 1 or self.finetune_epochs < 1 or self.finetune_lr <= 0:
            raise ValueError("study: scratch_epochs and finetune_epochs must be >= 1, finetune_lr > 0")
        self.out_dir = str(Path(self.out_dir).expanduser())

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
        unknown = set(study) - set(cls.__dataclass_fields__) - {"base"}
        if unknown:
            raise ValueError(f"study config {p}: unknown key(s) in [study]: {', '.join(sorted(unknown))}")
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
    group: str = "main"  # main | init | repeat | extra | reference

    @property
    def parents(self) -> list[str]:
        return [n for n in (self.after, self.init_from_a) if n]

    @property
    def jittered(self) -> bool:
        return len(self.scale) == 2 and self.scale[0] != self.scale[1]


def build_plan(spec: StudySpec) -> list[Run]:
    scratch = [f"train.epochs={spec.scratch_epochs}", f"model.init={spec.scratch_init}"]
    # the paper's fine-tuning stages keep its plateau rule (auto would pick cosine for init_from)
    tune = [f"train.epochs={spec.finetune_epochs}", f"optim.lr={spec.finetune_lr}", "optim.schedule=plateau"]
    tune += spec.finetune_set
    small, large = SCALES
    runs = []
    for c in CONFIGS:
        init_a = "" if c in FROM_SCRATCH else f"A-{small}"
        runs.append(Run(f"{c}-{small}", c, [small], scratch, init_from_a=init_a))
    runs += [Run(f"{c}-{large}", c, [large], tune, after=f"{c}-{small}") for c in CONFIGS]
    runs += [Run(f"{c}-jit", c, list(JITTER), tune, after=f"{c}-{large}") for c in JITTERED]
    runs.append(Run(f"D-{small}-glorot", "D", [small], [*scratch[:1], "model.init=glorot"], group="init"))
    by_name = {r.name: r for r in runs}
    for base in spec.repeat_runs:
        if base not in by_name:
            raise ValueError(f"study.repeat_runs: no run {base!r} in the grid")
        r = by_name[base]
        for s in spec.repeat_seeds:
            o = [*r.overrides, f"train.seed={s}"]
            runs.append(Run(f"{base}-seed{s}", r.arch, r.scale, o, r.after, r.init_from_a, "repeat"))
    for e in spec.extra:
        o = [*e.get("set", []), *([f"train.epochs={spec.scratch_epochs}"] if spec.quick else [])]
        after, init_a, group = e.get("after", ""), e.get("init_from_a", ""), e.get("group", "extra")
        runs.append(Run(e["name"], e["arch"], list(e.get("scale", [small])), o, after, init_a, group))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"study: run names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return runs
