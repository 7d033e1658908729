"""The inputs of the hostile-user cases (scripts/hostile_cases.py): tiny nets, photographs,
checkpoints whose metadata lies, a 1,000,000 x 1 PNG, a FIFO, a photo with an EXIF turn and,
as root, a full and a read-only file system. Everything lives under one temporary folder.

    from hostile_inputs import build, mounts
    paths = build(Path("/tmp/x"))
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from verydeep.io.checkpoint import Meta, save_model
from verydeep.models.vgg import VGG

NET = {"num_classes": 2, "width_mult": 0.125, "fc_width": 16, "crop_size": 32}


def _folder(root: Path, extra: dict[str, bytes | Image.Image] | None = None) -> Path:
    """Two classes of three small photographs each, plus ``extra`` files in class ``a``."""
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (48 + 5 * i, 40), (70 * i, 90 if c == "a" else 20, 30)).save(
                root / c / f"{i}.png"
            )
    for name, content in (extra or {}).items():
        if isinstance(content, bytes):
            (root / "a" / name).write_bytes(content)
        else:
            content.save(root / "a" / name, optimize=True)
    return root


def _lie(ck: Path, out: Path, edit) -> Path:
    """A copy of ``ck`` whose metadata ``edit(meta_dict)`` has changed; the tensors are the same
    (the stored digest covers the tensors only, so the metadata check is what must catch it)."""
    with safe_open(str(ck), "pt") as f:
        header = f.metadata()
    d = json.loads(header["verydeep"])
    edit(d)
    header["verydeep"] = json.dumps(d)
    save_file(load_file(str(ck)), str(out), metadata=header)
    return out


def _lies(ck: Path, root: Path) -> dict[str, Path]:
    def model(key, value):
        return lambda d: d["model"].__setitem__(key, value)

    edits = {
        "lie_bogus_key": model("bogus", 1),
        "lie_width_str": model("width_mult", "0.125"),
        "lie_classes_neg": model("num_classes", -3),
        "lie_crop": model("crop_size", 64),  # FC6's input size no longer matches its tensor
        "lie_fc8": model("num_classes", 3),  # nor FC8's rows
        "lie_channels": model("in_channels", 1),
        "lie_no_mean": lambda d: d["preprocess"].pop("mean"),
        "lie_e_wide": lambda d: d["model"].update(arch="E", width_mult=8.0, fc_width=4096, crop_size=224),
    }
    return {name: _lie(ck, root / f"{name}.safetensors", e) for name, e in edits.items()}


def _exif_pair(root: Path) -> dict[str, Path]:
    """The same pixels stored upright, and stored turned with EXIF orientation 6 (turn 90 degrees
    clockwise to view), both JPEG at quality 100 without chroma subsampling."""
    rng = np.random.default_rng(0)
    px = (rng.random((40, 64, 3)) * 255).astype(np.uint8)
    px[:, :20] = (250, 30, 30)  # a red band on the left: the turn changes what the net sees
    up, turned = Image.fromarray(px), Image.fromarray(np.rot90(px, 1).copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    p = {"upright": root / "upright.jpg", "turned": root / "turned.jpg"}
    up.save(p["upright"], quality=100, subsampling=0)
    turned.save(p["turned"], quality=100, subsampling=0, exif=exif.tobytes())
    return p


def build(root: Path) -> dict[str, Path]:
    """The inputs every case draws on."""
    torch.manual_seed(0)
    p = {"ck": root / "net.safetensors", "fifo": root / "fifo", "strip": root / "strip.png"}
    save_model(p["ck"], VGG("A", **NET), Meta(classes=["a", "b"]))
    strip = Image.new("L", (1_000_000, 1))
    strip.save(p["strip"], optimize=True)
    bad = b"\xff\xd8 not really"
    p["data"] = _folder(root / "data")
    p["data_bad"] = _folder(root / "data_bad", {"bad.jpg": bad})
    p["data_strip"] = _folder(root / "data_strip", {"strip.png": strip})
    p["bad"] = root / "bad.jpg"
    p["bad"].write_bytes(bad)
    os.mkfifo(p["fifo"])
    p["pth"], p["vgg_pth"] = root / "w.pth", root / "vgg.pth"
    torch.save({"w": torch.zeros(1)}, p["pth"])  # not VGG weights
    torch.save(VGG("A", **NET).state_dict(), p["vgg_pth"])  # torchvision keys: convert takes it
    p |= _lies(p["ck"], root)
    nan = load_file(str(p["ck"]))
    nan["classifier.6.bias"][0] = float("nan")
    net = VGG("A", **NET)
    net.load_state_dict(nan)
    p["nan"] = root / "nan.safetensors"
    save_model(p["nan"], net, Meta(classes=["a", "b"]))
    flipped = bytearray(p["ck"].read_bytes())
    flipped[-5] ^= 1
    p["flip"] = root / "flip.safetensors"
    p["flip"].write_bytes(bytes(flipped))
    (root / "target.csv").write_text("old\n")
    (root / "link.csv").symlink_to(root / "target.csv")
    p["link"], p["target"], p["dir"] = root / "link.csv", root / "target.csv", root / "data" / "a"
    return p | _exif_pair(root)


@contextlib.contextmanager
def mounts(root: Path) -> Iterator[dict[str, Path] | None]:
    """A full tmpfs (ENOSPC) and a read-only one (EROFS) under ``root``; None where this user
    may not mount (not root, or no mount in this container)."""
    full, ro = root / "full", root / "ro"
    full.mkdir()
    ro.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], capture_output=True)
    if ok.returncode != 0:
        yield None
        return
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], check=True)
        with contextlib.suppress(OSError), (full / "filler").open("wb", buffering=0) as f:
            while True:  # fill it to the last block
                f.write(b"\0" * 4096)
        yield {"full": full, "ro": ro}
    finally:
        for m in (ro, full):
            subprocess.run(["umount", str(m)], capture_output=True)
