"""Hostile-user cases through the whole CLI (issue 17): each must end with its expected exit code
and, when it fails, one line on stderr and no traceback. Prints one row per case and a count.

    PYTHONPATH=src .venv/bin/python scripts/hostile_cases.py [--out DIR]

The cases build their own inputs (tiny nets, photographs, lying checkpoints, a 1,000,000 x 1
PNG, a FIFO; /dev/full and /proc as outputs) under a temporary folder; nothing else is written.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from verydeep.io.checkpoint import Meta, save_model
from verydeep.models.vgg import VGG

TINY = ["--set", "model.arch=A", "--set", "model.width_mult=0.125", "--set", "model.fc_width=16"]
TINY += ["--set", "model.crop_size=32", "--set", "train.device=cpu", "--set", "train.precision=fp32"]


def build(root: Path) -> dict[str, Path]:
    """The inputs every case draws on."""
    torch.manual_seed(0)
    p = {"ck": root / "net.safetensors", "data": root / "data", "fifo": root / "fifo"}
    save_model(
        p["ck"],
        VGG("A", num_classes=2, width_mult=0.125, fc_width=16, crop_size=32),
        Meta(classes=["a", "b"]),
    )
    for c in "ab":
        (p["data"] / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (48 + 5 * i, 40), (70 * i, 90, 30)).save(p["data"] / c / f"{i}.png")
    p["strip"] = root / "strip.png"
    Image.new("L", (1_000_000, 1)).save(p["strip"], optimize=True)
    p["bad"] = root / "bad.jpg"
    p["bad"].write_bytes(b"\xff\xd8 not really")
    os.mkfifo(p["fifo"])
    p["data_bad"] = root / "data_bad"
    for c in "ab":
        (p["data_bad"] / c).mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(p["data_bad"] / c / "ok.png")
    (p["data_bad"] / "a" / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    p["pth"] = root / "w.pth"
    torch.save({"w": torch.zeros(1)}, p["pth"])
    for name, edit in {"lie_width": ("width_mult", "0.125"), "lie_classes": ("num_classes", -3)}.items():
        sd, meta_path = load_file(str(p["ck"])), root / f"{name}.safetensors"
        from safetensors import safe_open

        with safe_open(str(p["ck"]), "pt") as f:
            header = f.metadata()
        d = json.loads(header["verydeep"])
        d["model"][edit[0]] = edit[1]
        header["verydeep"] = json.dumps(d)
        save_file(sd, str(meta_path), metadata=header)
        p[name] = meta_path
    nan = load_file(str(p["ck"]))
    nan["classifier.6.bias"][0] = float("nan")
    p["nan"] = root / "nan.safetensors"
    save_model(p["nan"], _with(nan), Meta(classes=["a", "b"]))
    flipped = bytearray(p["ck"].read_bytes())
    flipped[-5] ^= 1
    p["flip"] = root / "flip.safetensors"
    p["flip"].write_bytes(bytes(flipped))
    return p


def _with(sd: dict) -> VGG:
    net = VGG("A", num_classes=2, width_mult=0.125, fc_width=16, crop_size=32)
    net.load_state_dict(sd)
    return net


def cases(p: dict[str, Path], root: Path) -> list[tuple[str, list[str], int]]:
    """(class, argv, expected exit code)."""
    ck, data, img = str(p["ck"]), str(p["data"]), str(p["data"] / "a" / "0.png")
    div = ["--set", "optim.lr=1000", "--set", "train.max_steps=40", "--set", "data.subset=64"]
    div += ["--set", "optim.batch_size=16", "--set", f"train.out_dir={root}/div"]
    fail = ["--on-bad-image", "fail", "--workers", "1", "--scales", "256"]
    return [
        ("outputs", ["predict", "-m", ck, img, "--heatmap", str(p["fifo"])], 2),
        ("outputs", ["eval", ck, "--data", data, "--csv", data], 2),
        ("outputs", ["features", ck, data, "--out", "/dev/full"], 2),
        ("outputs", ["export", ck, str(p["fifo"])], 2),
        ("outputs", ["convert", str(p["pth"]), "/proc/verydeep-no/x.safetensors"], 2),
        ("inputs", ["predict", "-m", ck, str(p["strip"]), img], 1),
        ("inputs", ["predict", "-m", ck, str(p["bad"]), img], 1),
        ("inputs", ["predict", "-m", ck, str(root / "missing.jpg")], 1),
        ("inputs", ["preresize", data, str(root / "small"), "--smallest-side", "36"], 0),
        ("inputs", ["features", ck, str(p["data_bad"]), "--out", str(root / "g.npz"), *fail], 2),
        ("checkpoints", ["predict", "-m", str(p["lie_width"]), img], 2),
        ("checkpoints", ["predict", "-m", str(p["lie_classes"]), img], 2),
        ("checkpoints", ["eval", str(p["nan"]), "--data", data], 2),
        ("checkpoints", ["eval", str(p["flip"]), "--data", data], 2),
        ("checkpoints", ["predict", "-m", str(p["pth"]), img], 2),
        ("values", ["eval", ck, "--data", data, "--device", "bogus"], 2),
        ("values", ["eval", ck, "--data", data, "--device", "cuda:3"], 2),
        ("values", ["eval", ck, "--data", data, "--threads", "-3"], 2),
        ("values", ["eval", ck, "--data", data, "--grid", "0", "--method", "multicrop"], 2),
        ("values", ["eval", ck, "--data", data, "--limit", "-1"], 2),
        ("values", ["eval", ck, "--data", data, "--scales", "1e9"], 2),
        ("values", ["predict", "-m", ck, img, "--top", "-1"], 2),
        ("values", ["features", ck, data, "--out", str(root / "f.npz"), "--scales", "1e7"], 2),
        ("values", ["bench", "--device", "bogus"], 2),
        ("values", ["train", *TINY, "--set", "train.device=tpu"], 2),
        ("values", ["train", *TINY, "--set", "optim.lr=1e300"], 2),
        ("values", ["localize", "train", "--data", data, "--init", ck, "--out", "x", "--steps", "0"], 2),
        ("values", ["preresize", data, str(root / "p2"), "--quality", "0"], 2),
        ("divergence", ["train", "--no-progress", *TINY, *div], 3),
    ]


def run_case(argv: list[str], expect: int) -> dict:
    r = subprocess.run([sys.executable, "-m", "verydeep", *argv], capture_output=True, text=True, timeout=300)
    err = [ln for ln in r.stderr.splitlines() if ln.strip() and "it/s]" not in ln and "img/s]" not in ln]
    ok = r.returncode == expect and "Traceback" not in r.stderr and (expect == 0 or len(err) >= 1)
    one_line = expect != 2 or len([ln for ln in err if "error" in ln]) == 1
    return {"rc": r.returncode, "expect": expect, "ok": ok and one_line, "last": (err or [""])[-1][:140]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = build(root)
        rows = []
        for cls, argv, expect in cases(paths, root):
            row = {"class": cls, "argv": " ".join(a.replace(tmp, "$T") for a in argv[:6])} | run_case(
                argv, expect
            )
            rows.append(row)
            mark = "ok  " if row["ok"] else "FAIL"
            print(f"{mark} {cls:12} rc={row['rc']} (want {expect})  {row['argv'][:70]}")
            if not row["ok"]:
                print(f"     {row['last']}")
    failed = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} cases as promised")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
