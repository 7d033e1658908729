"""A run directory: resolved config, CSV log, training curves PNG, checkpoints, progress bar.

Only rank 0 writes shared files; every rank writes its own RNG state so that a resumed run
draws the same crops and dropout masks as an uninterrupted one.

Layout::

    <out_dir>/config.json          the resolved RunConfig
    <out_dir>/log.csv              one row per epoch
    <out_dir>/curves.png           loss and held-out error per epoch
    <out_dir>/result.json          final numbers (test error)
    <out_dir>/checkpoints/last.safetensors, last.state.pt, last.rng<rank>.pt, best.safetensors

Example:
    >>> import tempfile
    >>> from verydeep.io.run_dir import RunDir
    >>> RunDir(tempfile.mkdtemp(), is_main=True, progress=False).has_checkpoint()
    False
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ..engine import StepState
from .checkpoint import Meta, atomic_write, load_state, read_model_file, save_model, save_state


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Bar:
    def __init__(self, bar: tqdm | None) -> None:
        self.bar = bar

    def update(self, m: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{m['loss']:.3f}", err=f"{m['top1_err']:.3f}", img_s=f"{m['img_s']:.0f}"
            )
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunDir:
    def __init__(self, out_dir: str | Path, is_main: bool, progress: bool = True, rank: int = 0) -> None:
        self.root, self.is_main, self.progress, self.rank = Path(out_dir), is_main, progress, rank
        self.ckpt = self.root / "checkpoints"

    def has_checkpoint(self) -> bool:
        return (self.ckpt / "last.state.pt").is_file() and (self.ckpt / "last.safetensors").is_file()

    def start(self, cfg, resumed: bool) -> None:
        if self.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(self.root / "config.json", json.dumps(cfg.to_dict(), indent=1).encode())
            what = "resuming" if resumed else "starting"
            self.log(f"{what} {cfg.model.arch} run in {self.root}")

    def log(self, msg: str) -> None:
        if self.is_main:
            print(msg, file=sys.stderr, flush=True)

    def progress_bar(self, total: int, initial: int, desc: str) -> _Bar:
        show = self.is_main and self.progress
        return _Bar(
            tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, leave=False) if show else None
        )

    def save(self, model, meta: Meta, opt, sched, state: StepState, best: bool = False) -> None:
        """Weights, then optimiser/schedule/counters (each atomic); RNG per rank."""
        save_state(self.ckpt / f"last.rng{self.rank}.pt", rng_state())
        if not self.is_main:
            return
        save_model(self.ckpt / "last.safetensors", model, meta)
        tr = {"optimizer": opt.state_dict(), "schedule": sched.state_dict(), "step": vars(state).copy()}
        save_state(self.ckpt / "last.state.pt", tr)
        if best:
            tmp = self.ckpt / ".best.safetensors.tmp"
            shutil.copyfile(self.ckpt / "last.safetensors", tmp)
            tmp.replace(self.ckpt / "best.safetensors")

    def restore(self, model, opt, sched, device: torch.device) -> StepState:
        tensors, _ = read_model_file(self.ckpt / "last.safetensors")
        model.load_state_dict(tensors)
        tr = load_state(self.ckpt / "last.state.pt")
        opt.load_state_dict(tr["optimizer"])
        sched.load_state_dict(tr["schedule"])
        rng_file = self.ckpt / f"last.rng{self.rank}.pt"
        if rng_file.is_file():
            set_rng_state(load_state(rng_file))
        return StepState(**tr["step"])

    def epoch_row(self, epoch: int, tr: dict, va: dict | None, lr: float, seconds: float) -> dict:
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": tr["loss"],
            "train_err": tr["top1_err"],
            "img_s": tr["img_s"],
        }
        if va:
            row |= {"val_loss": va["loss"], "val_err": va["top1_err"], "val_top5_err": va["top5_err"]}
        row["seconds"] = seconds
        if self.is_main:
            self._append_csv(row)
            msg = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            self.log(msg)
        return row

    def _append_csv(self, row: dict) -> None:
        path = self.root / "log.csv"
        new = not path.exists()
        with path.open("a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    def write_curves(self, history: list[dict]) -> None:
        from .plots import plot_curves  # matplotlib only when a PNG is wanted

        if self.is_main and history:
            plot_curves(history, self.root / "curves.png")

    def load_best(self, model) -> None:
        """Rank 0 loads the held-out-best weights into ``model`` (if a best checkpoint exists)."""
        path = self.ckpt / "best.safetensors"
        if self.is_main and path.is_file():
            model.load_state_dict(read_model_file(path)[0])

    def finish(self, result: dict) -> None:
        if self.is_main:
            atomic_write(self.root / "result.json", json.dumps(result, indent=1).encode())
