"""Post-conditions of the hostile-user cases (scripts/hostile_cases.py). Each check takes the
finished command (``subprocess.CompletedProcess``) and returns what is wrong, or None.

    from hostile_checks import is_device
    assert is_device(None) is None
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file


def is_device(_r) -> str | None:
    return None if stat.S_ISCHR(os.stat("/dev/full").st_mode) else "/dev/full is no longer a device"


def says(text: str):
    """The command's output holds ``text`` (a count it must report)."""

    def check(r) -> str | None:
        return None if text in r.stdout + r.stderr else f"does not say {text!r}"

    return check


def unchanged(path: Path):
    """The file (or FIFO) at ``path`` keeps its inode, mode and bytes from just before the
    command (``check.snapshot`` is called then) to just after."""
    seen: dict = {}

    def snapshot() -> None:
        seen["st"] = os.lstat(path)
        seen["data"] = path.read_bytes() if stat.S_ISREG(seen["st"].st_mode) else None

    def check(_r) -> str | None:
        now, st = os.lstat(path), seen["st"]
        if (now.st_ino, now.st_mode) != (st.st_ino, st.st_mode):
            return f"{path.name} was replaced"
        if seen["data"] is not None and path.read_bytes() != seen["data"]:
            return f"{path.name} was changed"
        return None

    check.snapshot = snapshot
    return check


def written_through(p: dict):
    def check(_r) -> str | None:
        if not p["link"].is_symlink():
            return "the symlink was replaced"
        return None if p["target"].read_text().startswith("net,") else "the link's target was not written"

    return check


def only_filler(*mounts: Path):
    """Nothing but the filler (and empty folders) is left on the full and read-only disks."""

    def check(_r) -> str | None:
        left = [f for m in mounts for f in m.rglob("*") if f.is_file() and f.name != "filler"]
        return f"left behind: {[f.name for f in left]}" if left else None

    return check


def complete_run(run: Path):
    def check(_r) -> str | None:
        names = ("config.json", "log.csv", "curves.png", "result.json", "checkpoints/best.safetensors")
        missing = [n for n in names if not (run / n).is_file()]
        if missing:
            return f"missing {missing}"
        ck = run / "checkpoints"
        same = (ck / "best.safetensors").read_bytes() == (ck / "last.safetensors").read_bytes()
        return None if same else "best differs from the only weights"

    return check


def edit_manifest(run: Path, elsewhere: Path):
    """Point last.json's weights at a private file outside the run (a lying manifest)."""

    def before() -> None:
        elsewhere.write_bytes((run / "checkpoints" / "last.safetensors").read_bytes())
        elsewhere.chmod(0o600)
        manifest = run / "checkpoints" / "last.json"
        m = json.loads(manifest.read_text())
        m["weights"] = str(elsewhere)
        manifest.write_text(json.dumps(m))

    return before


def finite_last(run: Path):
    """The last good checkpoint exists and holds finite weights only."""

    def check(_r) -> str | None:
        last = run / "checkpoints" / "last.safetensors"
        if not last.is_file():
            return "no last good checkpoint"
        bad = [k for k, t in load_file(str(last)).items() if t.is_floating_point() and not t.isfinite().all()]
        return f"non-finite tensors {bad[:3]}" if bad else None

    return check


def holds_lock(argv: list[str], proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until the run ``argv`` (started as ``proc``) holds its out_dir's lock."""
    out = next(Path(a.split("=", 1)[1]) for a in argv if a.startswith("train.out_dir="))
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        lock = out / ".lock"
        if lock.is_file() and lock.read_text().strip() == str(proc.pid):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the holding run never took {out}/.lock (rc {proc.poll()})")


def _probs(stdout: str) -> list[list[float]]:
    return [[t["prob"] for t in sorted(r["top"], key=lambda t: t["index"])] for r in json.loads(stdout)]


def same_probabilities(ck: str, up: str, turned: str):
    """With EXIF honoured, the turned photo scores as the upright one; read as stored (the
    second command, run here) it scores differently by much more than that."""

    def check(r) -> str | None:
        a, b = _probs(r.stdout)
        cmd = [sys.executable, "-m", "verydeep", "predict", "-m", ck, "--json", "--no-exif", up, turned]
        c, d = _probs(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        honoured = max(abs(x - y) for x, y in zip(a, b, strict=True))
        ignored = max(abs(x - y) for x, y in zip(c, d, strict=True))
        if not ignored > 10 * honoured:
            return f"EXIF changed too little: {honoured:.2g} honoured vs {ignored:.2g} ignored"
        return None

    return check
