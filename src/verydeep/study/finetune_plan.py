"""A fine-tuning study's plan: one source net, the data sets it is carried to, the rows compared.

Every row runs on every data set, on the same photographs: training uses the data set's train
split and the report scores its test split (``val``), which chooses nothing. A row starts from

* ``source``: the source checkpoint as it is (its input convention kept, ``data.preprocess=auto``);
* ``pth``, ``h5``, ``caffemodel``: the source written out in that format (``verydeep export``: a
  ``.pth`` in torchvision's convention, the other two in Caffe's) and read back with ``verydeep
  convert``, so that each import path is fine-tuned;
* ``random``: the source's net at a fresh Glorot initialisation, with the source's convention
  (the same recipe on weights that learnt nothing);
* ``scratch``: no checkpoint; the source's shape is given as keys (``model.*``) and the row's own
  ``set`` chooses the recipe.

and either trains (``method = "train"``: ``verydeep train`` with ``base``, the data set's ``set``
and the row's ``set``) or fits Appendix B's linear SVMs on the start's FC7 descriptors
(``method = "svm"``, nothing trained). ``repeat_best`` rows of each data set (the most accurate
trained rows) are run again with each of ``repeat_seeds``.

Example:
    >>> spec = FinetuneSpec(source="net.safetensors", datasets=[{"name": "ants", "root": "hym"}],
    ...                     rows=[{"name": "all", "start": "source"}, {"name": "svm", "start": "source",
    ...                            "method": "svm"}])
    >>> [(r.dataset.name, r.row.name, r.seed) for r in plan_runs(spec)]
    [('ants', 'all', 0), ('ants', 'svm', 0)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .plans import items, read_table

STARTS = ("source", "pth", "h5", "caffemodel", "random", "scratch")
METHODS = ("train", "svm")
IMPORTS = ("pth", "h5", "caffemodel")


@dataclass(frozen=True)
class Dataset:
    name: str
    root: str
    set: tuple[str, ...] = ()  # config keys for this data set only


@dataclass(frozen=True)
class Row:
    name: str
    start: str
    method: str = "train"
    set: tuple[str, ...] = ()
    label: str = ""  # the report's words for the row (default: its name)

    def __post_init__(self) -> None:
        if self.start not in STARTS:
            raise ValueError(
                f"row {self.name!r}: start must be one of {', '.join(STARTS)}, got {self.start!r}"
            )
        if self.method not in METHODS:
            raise ValueError(f"row {self.name!r}: method must be train or svm, got {self.method!r}")
        if self.method == "svm" and (self.set or self.start == "scratch"):
            raise ValueError(
                f"row {self.name!r}: an svm row trains nothing: no set, and a start with weights"
            )


@dataclass(frozen=True)
class PlannedRun:
    dataset: Dataset
    row: Row
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.dataset.name}/{self.row.name}" + (f"-seed{self.seed}" if self.seed else "")


@dataclass
class FinetuneSpec:
    source: str  # the checkpoint every row starts from (weights: outside the repository)
    source_command: str = ""  # how to make it, quoted when it is missing
    title: str = "Fine-tuning"
    out_dir: str = "runs/finetune-study"  # run directories, starts (weights)
    results_dir: str = ""  # committed summaries, one folder per run ('' keeps them in out_dir)
    report: str = ""  # Markdown file whose results block the study rewrites ('' prints it)
    base: list[str] = field(default_factory=list)  # keys for every trained row
    svm_scales: list[int] = field(default_factory=lambda: [256])  # Q in paper units
    repeat_best: int = 2
    repeat_seeds: list[int] = field(default_factory=lambda: [1])
    test_split: str = "val"
    compare: list[list[str]] = field(default_factory=list)  # [a, b]: the report tests "a beats b"
    datasets: list[Dataset] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.datasets = items(Dataset, self.datasets, "finetune_study dataset")
        self.rows = items(Row, self.rows, "finetune_study row")
        names = {r.name for r in self.rows}
        bad = [p for p in self.compare if len(p) != 2 or not set(p) <= names]
        if bad:
            raise ValueError(f"finetune_study.compare: each entry is two row names, got {bad[0]}")
        if self.repeat_best < 0 or any(s <= 0 for s in self.repeat_seeds):
            raise ValueError(
                "finetune_study: repeat_best >= 0 and repeat_seeds > 0 (seed 0 is the first run)"
            )
        self.source = str(Path(self.source).expanduser())
        self.out_dir = str(Path(self.out_dir).expanduser())

    @classmethod
    def from_toml(cls, path: str | Path, quick: bool = False) -> FinetuneSpec:
        """``[finetune_study]`` of a TOML file; ``quick`` lays ``[quick]`` over it (CI)."""
        return cls(**read_table(path, "finetune_study", cls.__dataclass_fields__, quick, needs=("source",)))


def plan_runs(spec: FinetuneSpec) -> list[PlannedRun]:
    """Every data set x row at seed 0 (the repeats depend on results: ``repeats``)."""
    return [PlannedRun(d, r) for d in spec.datasets for r in spec.rows]


def repeats(spec: FinetuneSpec, accuracy: dict[str, float]) -> list[PlannedRun]:
    """The ``repeat_best`` most accurate rows of each data set (by ``accuracy[run.name]`` at seed 0;
    ties: plan order), once per repeat seed."""
    out = []
    for d in spec.datasets:
        done = [r for r in spec.rows if f"{d.name}/{r.name}" in accuracy]
        best = sorted(done, key=lambda r: -accuracy[f"{d.name}/{r.name}"])[: spec.repeat_best]
        out += [PlannedRun(d, r, s) for r in best for s in spec.repeat_seeds]
    return out
