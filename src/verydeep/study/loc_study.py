"""A localisation plan (``[localization_study]``): Appendix A's box nets on a VOC set, every
choice made on held-out training photographs, each candidate reported once.

The protocol, for every box-net ``run``: a classifier (``verydeep train`` on the VOC set's
image-level labels, fine-tuned from ``source`` or trained from scratch) initialises the box nets
(``verydeep localize train`` on ``fit_split``, one per ``nets`` entry: ``scr-all`` = SCR head,
all layers); ``localize tune`` chooses each net's merging and test scales on ``choose_split``;
``localize eval`` reports it with those settings on ``report_split``, which chooses nothing. A
``fusion`` pools the boxes of nets of earlier runs (the paper's Table 9), tuned and reported the
same way. The candidate with the lowest top-1 error on ``choose_split`` is the report's choice.

Weights live in ``<out_dir>`` (outside the repository); summaries in ``<results_dir>``:
``<run>/tune-<net>.json``, ``<run>/val-<net>.json`` (``localize tune/eval --json``'s) and
``classifiers/<name>/`` (the training run's config, log and result). A rerun skips every summary
that exists, so the plan survives interruption and a new machine.

Example:
    >>> spec = LocSpec(data="voc", classifiers=[{"name": "D", "source": "d.safetensors"}],
    ...                runs=[{"name": "D-lr1e-2", "classifier": "D", "nets": ["scr-all", "pcr-fc"]}],
    ...                fusions=[{"name": "both", "sets": {"two": ["D-lr1e-2/scr-all", "D-lr1e-2/pcr-fc"]}}])
    >>> [c.name for c in candidates(spec)]
    ['D-lr1e-2/scr-all', 'D-lr1e-2/pcr-fc', 'both/two']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..localization.api import parse_scales
from ..localization.net import LocTrainConfig
from ..localization.protocol import check_scales
from .plans import items, read_table

NETS = ("scr-all", "pcr-all", "scr-fc", "pcr-fc")  # head-layers: SCR/PCR x all layers/FC only


@dataclass(frozen=True)
class Classifier:
    name: str
    source: str = ""  # a classification checkpoint to fine-tune from ("": from scratch, by `set`)
    command: str = ""  # how to make the source, quoted when it is missing
    set: tuple[str, ...] = ()  # config keys beyond the plan's classifier_base


@dataclass(frozen=True)
class BoxRun:
    name: str
    classifier: str  # initialises the box nets (and scores their boxes unless `score` says)
    score: tuple[str, ...] = ()  # the classifiers whose mean posteriors rank and score the boxes
    nets: tuple[str, ...] = NETS
    lr: float = 0.01
    lr_drops: tuple[float, ...] = ()
    box_size: str = "linear"  # linear (the paper's) | log (R-CNN's)
    steps: int = 600
    steps_fc: int = 0  # the FC-only nets' steps (0: `steps`; an FC-only step costs about a third)
    seed: int = 0
    boxes_from: str = ""  # another run's box nets, scored here by `score` (not trained again)
    defaults: bool = True  # also report scr-all with the default merging
    candidates: bool = True  # tune and report each net (False: nets for fusions only)
    label: str = ""  # the report's words for the run (``compare``)

    def __post_init__(self) -> None:
        if not self.nets or not set(self.nets) <= set(NETS):
            raise ValueError(f"localization_study run {self.name!r}: nets are some of {list(NETS)}")
        for steps in {self.steps, self.steps_fc or self.steps}:  # the box-net settings' own ranges, now
            LocTrainConfig(
                steps=steps, lr=self.lr, lr_drops=self.lr_drops, box_size=self.box_size, seed=self.seed
            )


@dataclass(frozen=True)
class Fusion:
    name: str
    sets: dict = field(default_factory=dict)  # set name -> ["run/net", ...]: boxes pooled
    score: tuple[str, ...] = ()  # default: the first net's run's classifiers


@dataclass(frozen=True)
class Candidate:
    """One net or fusion: tuned on choose_split, reported on report_split."""

    folder: str  # a run's or a fusion's name
    net: str  # a net of the run, or a set of the fusion
    locs: tuple[tuple[str, str], ...]  # (run, net) of every box net pooled
    score: tuple[str, ...]  # classifier names

    @property
    def name(self) -> str:
        return f"{self.folder}/{self.net}"


@dataclass
class LocSpec:
    data: str  # the VOC root
    classifiers: list[Classifier] = field(default_factory=list)
    runs: list[BoxRun] = field(default_factory=list)
    fusions: list[Fusion] = field(default_factory=list)
    title: str = "Object localisation"
    fit_split: str = "train[:80%]"
    choose_split: str = "train[80%:]"
    report_split: str = "val"
    scale_sets: list[str] = field(default_factory=lambda: ["256", "384", "256,384"])  # tuned among
    flip: bool = True  # tune with and without the mirrored image
    classifier_base: list[str] = field(default_factory=list)  # keys of every classifier
    out_dir: str = "runs/loc-study"
    results_dir: str = ""
    report: str = ""
    hardware: str = ""
    show: int = 9  # candidates in the report's table
    compare: list[str] = field(default_factory=list)  # runs whose own choice the report sets beside

    def __post_init__(self) -> None:
        self.classifiers = items(Classifier, self.classifiers, "localization_study classifier")
        self.runs = items(BoxRun, self.runs, "localization_study run")
        self.fusions = items(Fusion, self.fusions, "localization_study fusion") if self.fusions else []
        known, runs = {c.name for c in self.classifiers}, {r.name: r for r in self.runs}
        for r in self.runs:
            used = {r.classifier, *r.score}
            if not used <= known or (r.boxes_from and r.boxes_from not in runs):
                raise ValueError(f"localization_study run {r.name!r}: no such classifier or run in {used}")
        if not set(self.compare) <= set(runs):
            raise ValueError(
                f"localization_study.compare: no such runs {sorted(set(self.compare) - set(runs))}"
            )
        for f in self.fusions:
            nets = [tuple(n.split("/")) for s in f.sets.values() for n in s]
            bad = [n for n in nets if len(n) != 2 or n[0] not in runs or n[1] not in runs[n[0]].nets]
            if bad or not f.sets or not set(f.score) <= known:
                raise ValueError(
                    f"localization_study fusion {f.name!r}: each set lists run/net entries {bad}"
                )
        for scales in self.scale_sets:
            check_scales(parse_scales(scales))
        self.out_dir = str(Path(self.out_dir).expanduser())

    @classmethod
    def from_toml(cls, path: str | Path, quick: bool = False) -> LocSpec:
        fields = cls.__dataclass_fields__
        return cls(**read_table(path, "localization_study", fields, quick, needs=("data", "runs")))

    def run(self, name: str) -> BoxRun:
        return next(r for r in self.runs if r.name == name)


def candidates(spec: LocSpec) -> list[Candidate]:
    """Every net of every run, then every set of every fusion, in plan order."""
    runs = [r for r in spec.runs if r.candidates]
    out = [Candidate(r.name, n, ((r.name, n),), r.score or (r.classifier,)) for r in runs for n in r.nets]
    for f in spec.fusions:
        for set_name, nets in f.sets.items():
            locs = tuple(tuple(n.split("/")) for n in nets)
            first = spec.run(locs[0][0])
            out.append(Candidate(f.name, set_name, locs, f.score or first.score or (first.classifier,)))
    return out
