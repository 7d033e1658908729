"""A transfer plan (``[transfer_study]``): Appendix B's very deep features of several source nets,
each against its untrained twin, with linear SVMs on several photo sets.

Every source is measured twice: as trained (``trained``) and as its ``twin``, the same net at a
fresh Glorot initialisation (``"glorot"``), another checkpoint (a path), or none (``""``). For
each of the source's descriptors and photo sets, the descriptors of the set's train and test
splits are computed once (``<out_dir>/<source>/<net>/``, outside the repository) and each of the
set's protocols fits the SVMs; its result (``verydeep transfer --json``'s) is the summary,
``<results_dir>/<source>/<net>/<set>-<descriptor>-<protocol>.json``. A rerun skips every
summary that exists, so the plan survives interruption and a new machine.

Example:
    >>> spec = TransferSpec(
    ...     sources=[{"name": "A", "checkpoint": "a.safetensors", "descriptors": ["single"],
    ...               "datasets": ["ants"]}],
    ...     descriptors={"single": {"scales": [256]}},
    ...     datasets=[{"name": "ants", "root": "hym", "protocols": ["recall", "caltech"]}])
    >>> for c in cells(spec):
    ...     print(c.name)
    A/trained/ants-single-recall
    A/trained/ants-single-caltech
    A/twin/ants-single-recall
    A/twin/ants-single-caltech
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from ..features import DescriptorConfig, describe_dataset
from ..io import study_results as summary
from ..io.checkpoint import load_model
from ..io.features import load_descriptors, save_descriptors
from ..io.files import atomic_write
from ..transfer import SVMConfig
from ..transfer_protocol import run_transfer
from .plans import existing_source, items, read_table, untrained_twin

# protocol -> (SVMConfig fields, Caltech split arguments of run_transfer)
PROTOCOLS = {
    "recall": ({}, {}),  # mean class recall on the test split
    "caltech": ({}, {"n_train": 30, "n_splits": 3}),  # 3 splits of 30 training photos per class
    "map": ({"ap": "area"}, {}),  # mAP on the test split, area under the interpolated curve
    "voc07": ({"ap": "voc07"}, {}),  # mAP, VOC-2007's 11-point AP
}


@dataclass(frozen=True)
class PhotoSet:
    name: str
    root: str
    protocols: tuple[str, ...] = ("recall",)

    def __post_init__(self) -> None:
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise ValueError(f"transfer_study dataset {self.name!r}: protocols are some of {list(PROTOCOLS)}")


@dataclass(frozen=True)
class Source:
    name: str
    checkpoint: str
    descriptors: tuple[str, ...]
    datasets: tuple[str, ...]
    label: str = ""  # the report's words (default: the name)
    command: str = ""  # how to make the checkpoint, quoted when it is missing
    twin: str = "glorot"  # "glorot" | a checkpoint | "" (no twin)
    layer: str = "fc7"  # any `verydeep features --layer`
    protocols: tuple[str, ...] = ()  # some of each set's protocols (default: all of them)


@dataclass(frozen=True)
class Cell:
    source: Source
    net: str  # trained | twin
    dataset: PhotoSet
    descriptor: str
    protocol: str

    @property
    def name(self) -> str:
        return f"{self.source.name}/{self.net}/{self.dataset.name}-{self.descriptor}-{self.protocol}"


@dataclass
class TransferSpec:
    sources: list[Source] = field(default_factory=list)
    descriptors: dict[str, dict] = field(default_factory=dict)  # name -> {scales, combine}
    datasets: list[PhotoSet] = field(default_factory=list)
    title: str = "Very deep features for other datasets"
    out_dir: str = "runs/transfer-study"  # descriptors, twins (large files)
    results_dir: str = ""  # committed summaries ('' keeps them in out_dir)
    report: str = ""
    hardware: str = ""
    cs: list[float] = field(default_factory=lambda: [0.01, 0.1, 1, 10, 100])
    threads: int = 0  # torch CPU threads for the descriptors (0: torch's default)
    train_split: str = "train"
    test_split: str = "val"
    table: list[str] = field(default_factory=list)  # sources of the report's first table
    table_descriptor: str = "single"
    table_head: str = "source"
    choose_from: list[str] = field(default_factory=list)  # descriptors chosen among by cv

    def __post_init__(self) -> None:
        self.sources = items(Source, self.sources, "transfer_study source")
        self.datasets = items(PhotoSet, self.datasets, "transfer_study dataset")
        sets, names = {d.name for d in self.datasets}, {s.name for s in self.sources}
        for s in self.sources:
            unknown = [x for x in s.descriptors if x not in self.descriptors]
            unknown += [x for x in s.datasets if x not in sets]
            if unknown:
                raise ValueError(f"transfer_study source {s.name!r}: no such descriptor or dataset {unknown}")
        for name in self.descriptors:  # a bad descriptor, layer or C grid fails here, not midway
            self.descriptor_config(name, "fc7")
        for s in self.sources:
            self.descriptor_config(s.descriptors[0], s.layer)
        SVMConfig(cs=tuple(float(c) for c in self.cs))
        if not set(self.table) <= names:
            raise ValueError(f"transfer_study.table: no such sources {sorted(set(self.table) - names)}")
        unknown = sorted({self.table_descriptor, *self.choose_from} - set(self.descriptors))
        if self.table and unknown:
            raise ValueError(f"transfer_study.table_descriptor / choose_from: no such descriptors {unknown}")
        self.out_dir = str(Path(self.out_dir).expanduser())

    @classmethod
    def from_toml(cls, path: str | Path, quick: bool = False) -> TransferSpec:
        return cls(**read_table(path, "transfer_study", cls.__dataclass_fields__, quick, needs=("sources",)))

    def descriptor_config(self, name: str, layer: str) -> DescriptorConfig:
        d = self.descriptors[name]
        unknown = set(d) - {"scales", "combine"}
        if unknown:
            raise ValueError(f"transfer_study descriptor {name!r}: unknown key(s) {sorted(unknown)}")
        return DescriptorConfig(scales=tuple(d["scales"]), combine=d.get("combine", "stack"), layer=layer)


def cells(spec: TransferSpec) -> list[Cell]:
    """Every summary the plan asks for, in plan order (trained before twin)."""
    by_name = {d.name: d for d in spec.datasets}
    nets = lambda s: ("trained", "twin") if s.twin else ("trained",)  # noqa: E731
    return [
        Cell(s, net, by_name[d], desc, p)
        for s in spec.sources
        for net in nets(s)
        for d in s.datasets
        for desc in s.descriptors
        for p in by_name[d].protocols
        if not s.protocols or p in s.protocols
    ]


def summary_path(spec: TransferSpec, cell: Cell) -> Path:
    return Path(spec.results_dir or spec.out_dir) / f"{cell.name}.json"


def checkpoint(spec: TransferSpec, source: Source, net: str) -> str:
    """The source's checkpoint (``trained``) or its twin's, the twin made once where it is Glorot."""
    path = existing_source(source.checkpoint, source.command, f"transfer_study source {source.name}")
    if net == "trained":
        return str(path)
    if source.twin == "glorot":
        return untrained_twin(path, Path(spec.out_dir) / source.name / "twin.safetensors")
    return str(Path(source.twin).expanduser())


def descriptors(spec: TransferSpec, cell: Cell, split: str, progress: bool) -> Path:
    """The descriptors of one split (``verydeep features``), computed once and kept in out_dir."""
    name = f"{cell.dataset.name}-{cell.descriptor}-{split}.safetensors"
    out = Path(spec.out_dir) / cell.source.name / cell.net / name
    if out.is_file():
        return out
    classes = None  # the test split takes the train split's class order
    if split != spec.train_split:
        classes = load_descriptors(descriptors(spec, cell, spec.train_split, progress)).classes
    ck = checkpoint(spec, cell.source, cell.net)
    model, meta = load_model(ck)
    cfg = replace(spec.descriptor_config(cell.descriptor, cell.source.layer), extra={"checkpoint": ck})
    what = f"{cell.source.name}/{cell.net} {cell.dataset.name} {split}"
    bar = lambda it: tqdm(it, desc=what, unit="img", file=sys.stderr, disable=not progress)  # noqa: E731
    d = describe_dataset(model, meta.prep, cell.dataset.root, split, cfg, classes, progress=bar)
    save_descriptors(out, d)
    return out


def run_cell(spec: TransferSpec, cell: Cell, progress: bool) -> dict:
    """One summary: the SVMs of the cell's protocol on its train and test descriptors."""
    train = load_descriptors(descriptors(spec, cell, spec.train_split, progress))
    test = load_descriptors(descriptors(spec, cell, spec.test_split, progress))
    fields, split_args = PROTOCOLS[cell.protocol]
    cs = tuple(float(c) for c in spec.cs)  # 1.0, not 1: the C keys of the summary, as the CLI writes
    r = run_transfer(train, test, SVMConfig(cs=cs, **fields), **split_args)
    atomic_write(summary_path(spec, cell), json.dumps(r, indent=1).encode())
    print(f"transfer_study: {cell.name}: {r['summary']}", file=sys.stderr, flush=True)
    return r


def entry_names(spec: TransferSpec) -> list[str]:
    """What ``--only`` names: the sources."""
    return [s.name for s in spec.sources]


def run_plan(
    spec: TransferSpec, progress: bool = True, report_only: bool = False, only: list[str] | None = None
) -> dict[str, dict]:
    """Every cell without a summary (unless ``report_only``; ``only``: of those sources);
    {cell name: summary} of all found."""
    if spec.threads and not report_only:
        import torch

        torch.set_num_threads(spec.threads)
    out = {}
    for cell in cells(spec):
        if only is not None and cell.source.name not in only:
            continue
        found = summary.read_json(summary_path(spec, cell))
        if found is None and not report_only:
            found = run_cell(spec, cell, progress)
        if found is not None:
            out[cell.name] = found
    return out
