"""The third round of hostile-user cases (issue 42), for scripts/hostile_cases.py: checkpoints
with integer tensors or out-of-range metadata, a damaged zip .pth, float images holding NaN,
outputs that cannot be written (refused before any work), named layers that do not exist, damaged
style images, and a node lost from a two-node run.

    from hostile_more import build_more, integrity, backbone, multinode
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from hostile_inputs import NET, _folder, _lie
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from verydeep.models.vgg import VGG


def _nan_tiff() -> Image.Image:
    arr = np.full((40, 48), 120.0, dtype=np.float32)
    arr[3:6, 3:6] = np.nan
    return Image.fromarray(arr, "F")


def build_more(root: Path, p: dict) -> dict:
    """The inputs of this round's classes, beside ``p`` (hostile_inputs.build)."""
    q = {}
    with safe_open(str(p["ck"]), "pt") as f:
        header = f.metadata()
    q["ints"] = root / "ints.safetensors"
    header.pop("verydeep_sha256", None)  # a file without a digest: only the dtype check can see it
    save_file({k: v.to(torch.int32) for k, v in load_file(str(p["ck"])).items()}, str(q["ints"]), header)
    q["scale0"] = _lie(p["ck"], root / "scale0.safetensors", lambda d: d.update(train_scale=[0]))
    q["twice"] = _lie(p["ck"], root / "twice.safetensors", lambda d: d.update(classes=["a", "a"]))
    torch.save(VGG("A", **NET).state_dict(), root / "good.pth")
    data = bytearray((root / "good.pth").read_bytes())
    with zipfile.ZipFile(root / "good.pth") as z:
        rec = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size > 64)
    local = rec.header_offset  # the local header's own name and extra lengths (not the directory's)
    start = local + 30 + int.from_bytes(data[local + 26 : local + 28], "little")
    start += int.from_bytes(data[local + 28 : local + 30], "little")
    data[start + rec.file_size // 2] ^= 0x10  # a byte inside one tensor's bytes
    q["crc"] = root / "crc.pth"
    q["crc"].write_bytes(bytes(data))
    q["data_nan"] = _folder(root / "data_nan", {"nan.tif": _nan_tiff()})
    q["nan_tif"] = q["data_nan"] / "a" / "nan.tif"
    return q


def integrity(p: dict, q: dict, root: Path, case: type) -> list:
    ck, img, data = str(p["ck"]), str(p["data"] / "a" / "0.png"), str(p["data"])
    cases = []
    for key, needle in (("ints", "holds torch.int32"), ("scale0", "train_scale"), ("twice", "named twice")):
        f = str(q[key])
        cases += [
            case("integrity", ["convert", f, str(root / f"c-{key}.safetensors")], 2, needle),
            case("integrity", ["eval", f, "--data", data], 2, needle),
            case("integrity", ["predict", "-m", f, img], 2, needle),
            case("integrity", ["features", f, data, "--out", str(root / f"f-{key}.npz")], 2, needle),
            case("integrity", ["export", f, str(root / f"e-{key}.onnx")], 2, needle),
        ]
    cases.append(case("integrity", ["convert", str(q["crc"]), str(root / "crc.safetensors")], 2, "CRC-32"))
    nan_data, nan_tif = str(q["data_nan"]), str(q["nan_tif"])
    small = str(root / "nan_small")
    cases += [
        case("integrity", ["eval", ck, "--data", nan_data], 0, "", _says("1 unreadable skipped")),
        case(
            "integrity", ["features", ck, nan_data, "--out", str(root / "n.npz")], 0, "", _says("skipped 1")
        ),
        case("integrity", ["predict", "-m", ck, nan_tif, img], 1, "NaN or infinite"),
        case("integrity", ["preresize", nan_data, small, "--smallest-side", "36"], 0, "", _says("bad 1")),
    ]
    locked = "/proc/1" if os.geteuid() == 0 else "/"  # a folder this process may not write in
    missing = str(root / "missing")
    for argv in (
        ["eval", ck, "--data", missing, "--csv", f"{locked}/e.csv"],
        ["features", ck, missing, "--out", f"{locked}/f.npz"],
        ["export", ck, f"{locked}/n.onnx"],
        ["style", img, img, "-m", ck, "--out", f"{locked}/s.png"],
    ):
        cases.append(case("integrity", argv, 2, "cannot write in"))
    return cases


def backbone(p: dict, q: dict, root: Path, case: type) -> list:
    ck, img, data = str(p["ck"]), str(p["data"] / "a" / "0.png"), str(p["data"])
    out = str(root / "style.png")

    def nothing(_r) -> str | None:
        return f"{out} was written" if Path(out).exists() else None

    feats = ["features", ck, data, "--out", str(root / "l.npz"), "--layer"]
    style = ["style", img, img, "-m", ck, "--out", out, "--steps", "1"]
    return [
        case("backbone", [*feats, "relu9_9"], 2, "layer"),
        case("backbone", [*feats, "relu3_3"], 2, "relu3_3"),  # config A has no conv3_3
        case("backbone", ["info", "--layers", "Z"], 2, "Z"),
        case("backbone", [*style[:2], str(p["bad"]), *style[3:]], 2, "bad.jpg", nothing),  # damaged style
        case("backbone", [style[0], str(q["nan_tif"]), *style[2:]], 2, "NaN", nothing),
        case("backbone", [*style, "--style-layers", "relu9_9"], 2, "relu9_9", nothing),
        case("backbone", [*style[:4], str(p["pth"]), *style[5:]], 2, "convert", nothing),
        case("backbone", [*style[:6], str(p["dir"]), "--steps", "1"], 2, "directory", nothing),
    ]


def plans(p: dict, root: Path, case: type) -> list:
    """``verydeep study`` on transfer and localisation plans: each refusal comes before any work,
    in one line, and writes nothing (no run folder, no summary, no report)."""
    out, data = root / "plan-out", str(p["data"])

    def plan(name: str, text: str) -> str:
        (root / name).write_text(text)
        return str(root / name)

    def nothing(_r) -> str | None:
        return f"{out} was written" if out.exists() else None

    where = f'out_dir = "{out}"\nresults_dir = "{out}/results"\nreport = "{out}/R.md"\n'
    source = f'{{name = "s", checkpoint = "{root}/absent.safetensors", command = "make-it", '
    tr = f'[transfer_study]\n{where}sources = [{source}descriptors = ["one"], datasets = ["d"]}}]\n'
    tr += f'descriptors = {{one = {{scales = [256]}}}}\ndatasets = [{{name = "d", root = "{data}"}}]\n'
    good = plan("good.toml", tr.replace(f"{root}/absent.safetensors", str(p["ck"])))
    loc = f'[localization_study]\n{where}data = "{data}"\nruns = [{{name = "r", classifier = "c"}}]\n'
    cls = f'classifiers = [{{name = "c", source = "{root}/absent.safetensors", command = "make-it"}}]\n'
    study = ["study", "--no-progress", "--config"]
    return [
        case("plans", [*study, plan("unknown.toml", tr + "colour = 1\n")], 2, "colour", nothing),
        case("plans", [*study, plan("syntax.toml", "[transfer_study\n")], 2, "not valid TOML", nothing),
        case("plans", [*study, plan("absent.toml", tr)], 2, "make-it", nothing),
        case("plans", [*study, plan("loc.toml", loc + cls)], 2, "make-it", nothing),
        case(
            "plans",
            [*study, plan("fusion.toml", loc + cls + 'fusions = [{name = "f", sets.x = ["q/scr-all"]}]\n')],
            2,
            "q",
            nothing,
        ),
        case("plans", [*study, good, "--only", "t"], 2, "no such entries", nothing),
        case("plans", [*study, good, "--report", str(p["dir"])], 2, "not a file", nothing),
        case("plans", [*study, good, "--report-only"], 2, "no finished runs", nothing),
    ]


def _says(text: str):
    def check(r) -> str | None:
        return None if text in r.stdout + r.stderr else f"does not say {text!r}"

    return check


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(endpoint: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
    """One simulated node of a two-node job: a torchrun agent with one worker (loopback c10d)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", "--rdzv-id=hostile", "--max-restarts=1",
           "-m", "verydeep", *argv]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    return subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _lose(node: subprocess.Popen) -> None:
    """The node's agent and every process under it (each worker has a session of its own)."""
    todo, seen = [node.pid], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    todo.append(int(stat.parent.name))
    for pid in seen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    node.wait()


def _step(out: Path) -> int:
    try:
        return int(json.loads((out / "checkpoints" / "last.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def multinode(p: dict, root: Path, train: object) -> list[dict]:
    """Rows (as hostile_cases.run_case makes them) of two whole-job cases: a node lost mid-run and
    started again (the job resumes and ends with the uninterrupted run's weights), and a run
    directory the nodes do not share (refused on both)."""
    sets = ["train.max_steps=12", "train.checkpoint_every=1", "model.dropout=0", "data.flip=false",
            "data.colour_shift=0", "data.scale=[224]"]  # fmt: skip
    rows = []
    runs = {}
    for name in ("ref", "lost"):
        out, ep = root / f"mn-{name}", f"127.0.0.1:{_port()}"
        argv = train(p["data"], out, *sets)
        a = _node(ep, argv)
        while socket.socket().connect_ex(("127.0.0.1", int(ep.split(":")[1]))) and a.poll() is None:
            time.sleep(0.05)
        b = _node(ep, argv)
        if name == "lost":
            deadline = time.time() + 120
            while _step(out) < 3 and time.time() < deadline and a.poll() is None:
                time.sleep(0.01)
            _lose(b)
            b = _node(ep, argv)
        errs = [x.communicate(timeout=300)[1] for x in (a, b)]
        runs[name] = (out, [a.returncode, b.returncode], errs)
    (out, codes, errs), ref = runs["lost"], runs["ref"][0]
    why = [f"rc {codes}"] if codes != [0, 0] else []
    if "resuming" not in "".join(errs):
        why.append("did not resume")
    a, b = (load_file(str(d / "checkpoints" / "last.safetensors")) for d in (ref, out))
    if not why and any(not torch.equal(a[k], b[k]) for k in a):
        why.append("weights differ from the uninterrupted run")
    rows.append(_row("node lost at step 3 of 12 and started again", codes, [0, 0], why, errs))
    for d in ("na", "nb"):
        (root / d).mkdir(exist_ok=True)
    ep, argv = f"127.0.0.1:{_port()}", train(p["data"], Path("run"), "train.max_steps=2")
    nodes = [_node(ep, argv, cwd=root / "na"), _node(ep, argv, cwd=root / "nb")]
    errs = [x.communicate(timeout=300)[1] for x in nodes]
    codes = [x.returncode for x in nodes]
    why = [] if all(c != 0 for c in codes) and "is not shared" in "".join(errs) else ["not refused"]
    rows.append(_row("train.out_dir on node-local disks", codes, ["!=0", "!=0"], why, errs))
    return rows


def _row(what: str, codes: list, expect: list, why: list[str], errs: list[str]) -> dict:
    lines = [ln for e in errs for ln in e.splitlines() if "error" in ln.lower() or "resuming" in ln]
    return {"class": "multinode", "argv": what, "rc": codes, "expect": expect, "ok": not why,
            "why": "; ".join(why), "last": (lines or [""])[-1][:160]}  # fmt: skip
