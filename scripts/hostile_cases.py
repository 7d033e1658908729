"""Hostile-user cases through the whole CLI (issues 17 and 42): every class of failure the second
and third rounds found, with the issues' own examples and more (the third round's classes are in
scripts/hostile_more.py). Each case must end with its expected exit code;
a failure is one line on stderr without a traceback; where a case names a post-condition (the
device node is still a device, nothing half-written, the run directory complete, the weights
finite) that is checked too. Prints one row per case and a count per class.

    PYTHONPATH=src .venv/bin/python scripts/hostile_cases.py [--out rows.json] [--only CLASS]

Inputs are built under a temporary folder (scripts/hostile_inputs.py); as root it also mounts a
full and a read-only tmpfs there. /dev/full is used as an output and checked to stay a device.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hostile_checks import (
    complete_run,
    edit_manifest,
    finite_last,
    holds_lock,
    is_device,
    only_filler,
    same_probabilities,
    says,
    unchanged,
    written_through,
)
from hostile_inputs import build, mounts
from hostile_more import backbone, build_more, integrity, multinode, plans

TINY = ["model.arch=A", "model.width_mult=0.125", "model.fc_width=16", "model.crop_size=32"]
TINY += ["train.device=cpu", "train.precision=fp32", "data.workers=0"]


def train(*sets: str) -> list[str]:
    return ["train", "--no-progress", *[a for s in (*TINY, *sets) for a in ("--set", s)]]


def folder_run(data: Path, out: Path, *sets: str) -> list[str]:
    d = ["data.dataset=imagefolder", f"data.root={data}", "data.val_fraction=0.25", "optim.batch_size=2"]
    return train(*d, f"train.out_dir={out}", *sets)


def shown(argv: list[str]) -> str:
    """The command without the settings every training case shares."""
    common = {*TINY, *folder_run(Path("."), Path("."))[2:]}
    keep, skip = [], False
    for a, nxt in zip(argv, [*argv[1:], ""], strict=True):
        if skip:
            skip = False
            continue
        placed = nxt.startswith(("data.root=", "train.out_dir=")) and not nxt.endswith("=")
        if a == "--set" and (nxt in common or placed):
            skip = True
            continue
        keep.append(a)
    return " ".join(keep)


@dataclass(frozen=True)
class Case:
    cls: str
    argv: list[str]
    expect: int
    needle: str = ""  # a word the last stderr line must hold
    check: object = None  # (CompletedProcess) -> str | None: what is wrong afterwards
    before: object = None  # () -> None: set the scene
    hold: list[str] | None = None  # a run that holds the out_dir meanwhile


def outputs(p: dict, root: Path) -> list[Case]:
    ck, img, data = str(p["ck"]), str(p["data"] / "a" / "0.png"), str(p["data"])
    fifo = str(p["fifo"])
    return [
        Case("outputs", ["predict", "-m", ck, img, "--heatmap", "/dev/full"], 2, "/dev/full", is_device),
        Case("outputs", ["predict", "-m", ck, img, "--heatmap", fifo], 2, "fifo", unchanged(p["fifo"])),
        Case("outputs", ["predict", "-m", ck, img, "--heatmap", str(p["dir"])], 2, "directory"),
        Case("outputs", ["eval", ck, "--data", data, "--csv", str(p["link"])], 0, "", written_through(p)),
        Case("outputs", ["eval", ck, "--data", data, "--csv", fifo], 2, "fifo"),
        Case("outputs", ["eval", ck, "--data", data, "--csv", data], 2, "directory"),
        Case("outputs", ["features", ck, data, "--out", "/dev/full"], 2, "/dev/full", is_device),
        Case("outputs", ["export", ck, fifo], 2, "fifo"),
        Case("outputs", ["convert", str(p["pth"]), "/proc/verydeep-no/x.safetensors"], 2),
        # output paths are checked before any input is read: the output's error, not the input's
        Case("outputs", ["eval", ck, "--data", str(root / "missing"), "--csv", fifo], 2, "fifo"),
        Case("outputs", ["features", ck, str(root / "missing"), "--out", fifo], 2, "fifo"),
    ]


def disks(p: dict, m: dict | None, root: Path) -> list[Case]:
    if m is None:
        return []
    ck, img, full, ro = str(p["ck"]), str(p["data"] / "a" / "0.png"), m["full"], m["ro"]
    left = only_filler(full, ro)
    return [
        Case("disks", folder_run(p["data"], full / "run", "train.max_steps=2"), 2, "No space", left),
        Case("disks", folder_run(p["data"], ro / "run", "train.max_steps=2"), 2, "Read-only", left),
        Case("disks", ["convert", str(p["vgg_pth"]), str(full / "w.safetensors")], 2, "No space", left),
        Case("disks", ["export", ck, str(ro / "n.onnx")], 2, "Read-only", left),
        Case("disks", ["predict", "-m", ck, img, "--heatmap", str(full / "h.png")], 2, "No space", left),
        Case("disks", ["features", ck, str(p["data"]), "--out", str(full / "f.npz")], 2, "No space", left),
        Case(
            "disks", ["eval", ck, "--data", str(p["data"]), "--csv", str(ro / "e.csv")], 2, "Read-only", left
        ),
        Case(
            "disks", ["preresize", str(p["data"]), str(full / "small"), "--smallest-side", "36"], 2, "", left
        ),
    ]


def rundirs(p: dict, root: Path) -> list[Case]:
    run, busy = root / "run", root / "busy"
    holder = folder_run(p["data"], busy, "train.seed=7", "train.epochs=1000", "optim.schedule=cosine")
    return [
        # a partial first epoch: its weights are the only ones, so best must be last
        Case("rundirs", folder_run(p["data"], run, "train.max_steps=1"), 0, "", complete_run(run)),
        # a kill between the commit of last and the copy to best: best is repaired on resume
        Case(
            "rundirs",
            folder_run(p["data"], run, "train.max_steps=1"),
            0,
            before=lambda: (run / "checkpoints" / "best.safetensors").unlink(),
            check=complete_run(run),
        ),
        Case("rundirs", folder_run(p["data"], busy, "train.seed=8"), 2, "in use", hold=holder),
        Case(
            "rundirs",
            folder_run(p["data"], run, "train.max_steps=6"),
            2,
            "not a file of",
            before=edit_manifest(run, root / "elsewhere.safetensors"),
            check=unchanged(run / "checkpoints" / "last.safetensors"),
        ),
    ]


def inputs(p: dict, root: Path) -> list[Case]:
    ck, img = str(p["ck"]), str(p["data"] / "a" / "0.png")
    strip, fail = str(p["data_strip"]), ["--on-bad-image", "fail", "--workers", "1", "--scales", "256"]
    up, turned = str(p["upright"]), str(p["turned"])
    return [
        Case("inputs", ["predict", "-m", ck, str(p["strip"]), img], 1, "strip.png"),
        Case("inputs", ["predict", "-m", ck, str(p["bad"]), img], 1, "bad.jpg"),
        Case("inputs", ["predict", "-m", ck, str(root / "missing.jpg"), img], 1, "missing.jpg"),
        Case("inputs", ["eval", ck, "--data", strip], 0, "", says("1 unreadable skipped")),
        Case("inputs", ["features", ck, strip, "--out", str(root / "s.npz")], 0, "", says("skipped 1")),
        Case(
            "inputs", ["preresize", strip, str(root / "small"), "--smallest-side", "36"], 0, "", says("bad 1")
        ),
        Case(
            "inputs",
            folder_run(p["data_strip"], root / "strip_run", "train.epochs=1"),
            0,
            "",
            says("bad_images=1"),
        ),
        Case(
            "inputs", ["features", ck, str(p["data_bad"]), "--out", str(root / "g.npz"), *fail], 2, "bad.jpg"
        ),
        Case(
            "inputs",
            ["predict", "-m", ck, "--json", up, turned],
            0,
            "",
            same_probabilities(ck, up, turned),
        ),
    ]


def checkpoints(p: dict) -> list[Case]:
    img = str(p["data"] / "a" / "0.png")
    lies = [k for k in p if k.startswith("lie_")]
    cases = [Case("checkpoints", ["predict", "-m", str(p[k]), img], 2, p[k].name) for k in lies]
    return [
        *cases,
        Case("checkpoints", ["eval", str(p["nan"]), "--data", str(p["data"])], 2, "nan.safetensors"),
        Case("checkpoints", ["eval", str(p["flip"]), "--data", str(p["data"])], 2, "flip.safetensors"),
        Case("checkpoints", ["predict", "-m", str(p["pth"]), img], 2, "w.pth"),
    ]


def values(p: dict, root: Path) -> list[Case]:
    ck, img, data = str(p["ck"]), str(p["data"] / "a" / "0.png"), str(p["data"])
    ev = ["eval", ck, "--data", data]
    flags = [
        ["--device", "bogus"],
        ["--device", "cuda:3"],
        ["--threads", "-3"],
        ["--grid", "0", "--method", "multicrop"],
    ]
    flags += [["--grid", "-2"], ["--limit", "-1"], ["--scales", "1e9"]]
    cases = [Case("values", ev + f, 2, f[0]) for f in flags]
    pr = ["predict", "-m", ck, img]
    for f in (["--top", "-1"], ["--grid", "0", "--method", "multicrop"], ["--device", "bogus"]):
        cases.append(Case("values", pr + f, 2, f[0]))
    fe = ["features", ck, data, "--out", str(root / "f.npz")]
    for f in (["--threads", "-1"], ["--device", "bogus"], ["--scales", "1e7"]):
        cases.append(Case("values", fe + f, 2, f[0]))
    cases.append(Case("values", ["bench", "--device", "bogus"], 2, "device"))
    sets = ["train.device=tpu", "optim.lr=1e300", "data.subset=-10", "train.epochs=-1", "train.max_steps=-5"]
    sets += ["optim.lr_factor=-1", "optim.patience=-1", "data.test_scale=-1", "train.checkpoint_every=-1"]
    sets += ["train.out_dir=", "data.scale=[100]"]
    cases += [Case("values", train(s), 2, s.split("=")[0]) for s in sets]
    cases.append(Case("values", folder_run(p["data"], root / "nc", "model.num_classes=3"), 2, "num_classes"))
    cases.append(
        Case("values", ["localize", "train", "--data", data, "--init", ck, "--out", "x", "--steps", "0"], 2)
    )
    cases.append(Case("values", ["preresize", data, str(root / "p2"), "--quality", "0"], 2, "quality"))
    return cases


def finetune(p: dict, root: Path) -> list[Case]:
    """Fine-tuning from a checkpoint that cannot be, or a setting that contradicts it: one line,
    exit 2, and no run directory made."""
    out = root / "tuned"

    def tune(init: Path | str, *sets: str) -> list[str]:
        return folder_run(p["data"], out, f"train.init_from={init}", "train.max_steps=1", *sets)

    def nothing(_proc: object) -> str | None:
        return f"{out} was made" if out.exists() else None

    cases = [
        (tune(p["ck"], "model.width_mult=0.25"), "model.width_mult is 0.25"),
        (tune(p["ck"], "model.crop_size=64"), "model.crop_size is 64"),
        (tune(p["ck"], "data.normalize=standardize"), "data.preprocess=data"),
        (tune(p["ck"], f"model.init_from_a={p['ck']}"), "give one"),
        (tune(p["pth"]), "verydeep convert"),
        (tune(p["nan"]), "NaN"),
        (tune(p["flip"]), "damaged"),
        (tune(root / "missing.safetensors"), "not found"),
        (train(f"train.init_from={p['ck']}", "data.dataset=fashion-mnist"), "3-channel"),
        (folder_run(p["data"], out, "finetune.layers=fc"), "finetune.layers"),
    ]
    return [Case("finetune", argv, 2, needle, nothing) for argv, needle in cases]


def divergence(p: dict, root: Path) -> list[Case]:
    """Runs that blow up: exit 3 with a finite last good checkpoint, whether they stop at the
    first non-finite loss or skip such steps until no progress is left to make."""
    stop, skip = root / "div-stop", root / "div-skip"
    steps = ["optim.lr=1000", "train.max_steps=20"]
    return [
        Case("divergence", folder_run(p["data"], stop, *steps), 3, "", finite_last(stop)),
        Case(
            "divergence",
            folder_run(p["data"], skip, *steps, "train.on_nonfinite=skip"),
            3,
            "",
            finite_last(skip),
        ),
        Case("divergence", train("optim.lr=3e38"), 2, "optim.lr"),  # beyond any rate that can train
    ]


def run_case(case: Case) -> dict:
    holder = None
    if case.hold:
        holder = subprocess.Popen([sys.executable, "-m", "verydeep", *case.hold], stderr=subprocess.DEVNULL)
        holds_lock(case.hold, holder)
    if case.before:
        case.before()
    if snapshot := getattr(case.check, "snapshot", None):
        snapshot()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "verydeep", *case.argv], capture_output=True, text=True, timeout=600
        )
    finally:
        if holder:
            holder.kill()
            holder.wait()
    err = [ln for ln in r.stderr.splitlines() if ln.strip() and "it/s]" not in ln and "img/s]" not in ln]
    why = []
    if r.returncode != case.expect:
        why.append(f"rc {r.returncode}")
    if "Traceback" in r.stderr:
        why.append("traceback")
    if case.expect == 2 and len([ln for ln in err if "error" in ln]) != 1:
        why.append(f"{len(err)} error lines")
    if case.needle and case.needle.lower() not in (err or [""])[-1].lower():
        why.append(f"no {case.needle!r} in the message")
    if case.check and (bad := case.check(r)):
        why.append(bad)
    return {
        "rc": r.returncode,
        "expect": case.expect,
        "ok": not why,
        "why": "; ".join(why),
        "last": (err or [""])[-1][:160],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the rows as JSON here")
    ap.add_argument(
        "--only",
        help="run one class (outputs, disks, rundirs, inputs, checkpoints, values, finetune, divergence, "
        "integrity, backbone, plans, multinode)",
    )
    args = ap.parse_args()
    t0, rows = time.time(), []
    with tempfile.TemporaryDirectory() as tmp, mounts(Path(tmp)) as m:
        root = Path(tmp)
        p = build(root)
        every = outputs(p, root) + disks(p, m, root) + rundirs(p, root) + inputs(p, root)
        every += checkpoints(p) + values(p, root) + finetune(p, root) + divergence(p, root)
        q = build_more(root, p)
        every += integrity(p, q, root, Case) + backbone(p, q, root, Case) + plans(p, root, Case)
        if m is None:
            print("disks: skipped (mounting a full and a read-only tmpfs needs root)")
        for case in (c for c in every if args.only in (None, c.cls)):
            row = {
                "class": case.cls,
                "argv": shown(case.argv).replace(tmp, "$T"),
            } | run_case(case)
            row["last"] = row["last"].replace(tmp, "$T")
            rows.append(row)
            mark = "ok  " if row["ok"] else "FAIL"
            print(f"{mark} {case.cls:11} rc={row['rc']} (want {case.expect})  {row['argv'][:90]}")
            if not row["ok"]:
                print(f"     {row['why']}: {row['last']}")
        if args.only in (None, "multinode"):  # whole jobs of two torchrun agents, not one command
            for row in multinode(p, root, folder_run):
                rows.append(row)
                print(f"{'ok  ' if row['ok'] else 'FAIL'} multinode   rc={row['rc']}  {row['argv']}")
                if not row["ok"]:
                    print(f"     {row['why']}: {row['last']}")
    failed = Counter(r["class"] for r in rows if not r["ok"])
    for cls, n in Counter(r["class"] for r in rows).items():
        print(f"{cls:11} {n - failed[cls]} of {n}")
    print(f"{len(rows) - sum(failed.values())} of {len(rows)} cases as promised ({time.time() - t0:.0f} s)")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
