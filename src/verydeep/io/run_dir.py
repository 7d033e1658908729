"""A run directory: resolved config, CSV log, training curves PNG, checkpoints, progress bar.

Only rank 0 writes shared files; every rank writes its own RNG state so that a resumed run
draws the same crops and dropout masks as an uninterrupted one.

Layout::

    <out_dir>/config.json          the resolved RunConfig
    <out_dir>/log.csv              one row per epoch
    <out_dir>/curves.png           loss and held-out error per epoch
    <out_dir>/result.json          final numbers (test error)
    <out_dir>/checkpoints/last.json        which step-<N>.* set is current (see io/resume.py)
    <out_dir>/checkpoints/step-<N>.safetensors, step-<N>.state.pt, step-<N>.rng<rank>.pt
    <out_dir>/checkpoints/last.safetensors, best.safetensors
    <out_dir>/checkpoints/init.safetensors  the weights before step 1 (``train.save_init``)

Example:
    >>> import tempfile
    >>> from verydeep.io.run_dir import RunDir
    >>> RunDir(tempfile.mkdtemp(), is_main=True, progress=False).has_checkpoint()
    False
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from .. import distributed
from ..engine import NonFiniteLossError, StepState, match_layout
from .checkpoint import Meta, read_model_file, save_model
from .files import atomic_write, replacing
from .resume import CheckpointSet, config_conflicts


def rng_state() -> dict:
    """This rank's generators: the CPU's, Python's and its own GPU's (each rank saves its file;
    the states of every visible GPU would not restore where fewer GPUs are visible)."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device: resolve_device set it
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    cuda = state.get("cuda")
    if cuda is None or not torch.cuda.is_available():
        return  # a CPU run resumed on a GPU: the GPU's generator starts from the seed
    if isinstance(cuda, list):  # saved by get_rng_state_all: one per GPU visible then
        here = torch.cuda.current_device()
        if here >= len(cuda):
            return
        cuda = cuda[here]
    torch.cuda.set_rng_state(cuda)


class _Bar:
    def __init__(self, bar: tqdm | None) -> None:
        self.bar = bar

    def update(self, m: dict, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{m['loss']:.3f}", err=f"{m['top1_err']:.3f}", img_s=f"{m['img_s']:.0f}"
            )
            self.bar.update(steps)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunDir:
    def __init__(
        self, out_dir: str | Path, is_main: bool, progress: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        self.root, self.is_main, self.progress, self.rank = Path(out_dir), is_main, progress, rank
        self.world_size = world_size
        self.ckpt = self.root / "checkpoints"
        self.checkpoints = CheckpointSet(self.ckpt, rank, is_main, world_size)

    def has_checkpoint(self) -> bool:
        return self.checkpoints.exists()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``<out_dir>/.lock`` for the life of the run (rank 0),
        so that a second run on the same directory is refused instead of mixing with it."""
        if not self.is_main:
            yield
            return
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"train.out_dir {self.root} exists and is not a directory")
        above = next((p for p in self.root.absolute().parents if p.exists()), None)
        if above is not None and not above.is_dir():  # mkdir would fail with a bare [Errno 20]
            raise ValueError(f"train.out_dir {self.root}: {above} is a file, not a directory")
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise ValueError(
                    f"train.out_dir {self.root} is in use by another run (pid {other}); "
                    "wait for it to end or choose another out_dir"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
            if created and [p.name for p in self.root.iterdir()] == [".lock"]:  # failed before writing
                (self.root / ".lock").unlink(missing_ok=True)
                self.root.rmdir()

    def check_reuse(self, cfg) -> None:
        """Refuse (ValueError, nothing touched) to let ``cfg`` overwrite another run's checkpoint
        (``lock`` has already refused an out_dir that is not a directory)."""
        if not self.has_checkpoint():
            return
        if not cfg.train.resume:
            raise ValueError(
                f"train.out_dir {self.root} already holds a checkpoint; choose another out_dir, "
                "or set train.resume=true to continue it"
            )
        saved = self.root / "config.json"
        if saved.is_file():
            diff = config_conflicts(json.loads(saved.read_text()), cfg.to_dict())
            if diff:
                raise ValueError(
                    f"train.out_dir {self.root} holds a checkpoint of a different config: "
                    f"{', '.join(diff[:4])}; choose another out_dir"
                )

    def check_shared(self) -> None:
        """Every rank sees rank 0's files in the run directory: checkpoints are written by rank 0
        and every rank reads them on resume, so across nodes out_dir must be on a file system
        they all mount. A directory that is node-local is refused on every rank, in one line."""
        if not torch.distributed.is_initialized() or self.world_size == 1:
            return
        token = [os.urandom(8).hex() if self.is_main else ""]
        torch.distributed.broadcast_object_list(token, src=0)
        probe = self.root / f".shared-{token[0]}"
        if self.is_main:
            atomic_write(probe, b"")
        distributed.barrier()
        blind = int(distributed.sum_across([0.0 if probe.exists() else 1.0], self._device())[0])
        distributed.barrier()
        if self.is_main:
            probe.unlink(missing_ok=True)
        if blind:
            raise ValueError(
                f"train.out_dir {self.root} is not shared: {blind} of {self.world_size} ranks do not see "
                "rank 0's files there; put it on a file system every node mounts (docs/SCALING.md)"
            )

    @staticmethod
    def _device() -> torch.device:
        """Where this rank's collectives run (NCCL's are on the rank's GPU)."""
        if torch.distributed.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

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
        """A crash-safe set (weights, optimiser/schedule/counters, RNG per rank); every rank calls it.

        ``best``: these weights also become ``best.safetensors``. The committed counters say so
        first (``best_step``), so a kill before the copy is repaired by ``restore``."""
        bad = [k for k, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()]
        if bad:  # never commit weights that cannot be a "last good" checkpoint
            raise NonFiniteLossError(
                f"the weights became non-finite by step {state.global_step} ({bad[0]}, ...); "
                f"the last good checkpoint in {self.ckpt} is kept; lower optim.lr"
            )
        if best:
            state.best_step = state.global_step
        tr = {"optimizer": opt.state_dict(), "schedule": sched.state_dict(), "step": state.to_dict()}
        self.checkpoints.write(
            state.global_step, lambda p: save_model(p, model, meta), tr, rng_state(), distributed.barrier
        )
        if best and self.is_main:
            self._copy_best(self.ckpt / "last.safetensors")

    def _copy_best(self, weights: Path) -> None:
        with replacing(self.ckpt / "best.safetensors") as tmp:
            shutil.copyfile(weights, tmp)

    def save_init(self, model, meta: Meta) -> None:
        """The initialised weights, before any step (a floor for features, or a start to share)."""
        if self.is_main:
            save_model(self.ckpt / "init.safetensors", model, meta)

    def restore(self, model, opt, sched, device: torch.device, classes: list[str] | None = None) -> StepState:
        """Load the committed set; ``classes`` (the data's) must be those the checkpoint learnt."""
        weights, tr, rng = self.checkpoints.read()
        tensors, meta = read_model_file(weights)
        if classes is not None and meta.classes and list(meta.classes) != list(classes):
            raise ValueError(
                f"the checkpoint in {self.ckpt} was trained on {len(meta.classes)} classes "
                f"{meta.classes[:3]}... but the data has {len(classes)} {list(classes)[:3]}...; "
                "use another train.out_dir (or train.init_from to fine-tune)"
            )
        try:
            model.load_state_dict(tensors)
            fused = [g.get("fused") for g in opt.param_groups]
            opt.load_state_dict(tr["optimizer"])
            for g, f in zip(opt.param_groups, fused, strict=False):  # how to step is this run's choice
                g["fused"] = f
            match_layout(opt)  # this run's memory format, whatever the saving run's was
        except (RuntimeError, KeyError, ValueError) as e:
            raise ValueError(
                f"the checkpoint in {self.ckpt} does not fit this model: {str(e)[:200]}"
            ) from None
        sched.load_state_dict(tr["schedule"])
        if rng is not None:
            set_rng_state(rng)
        else:
            self.log(f"rank {self.rank}: no RNG state saved for it; crops/dropout will differ from before")
        state = StepState.from_dict(tr["step"])
        if self.is_main and state.best_step == state.global_step:  # killed between commit and copy?
            self._copy_best(Path(weights))  # idempotent: best is these weights either way
        return state

    def epoch_row(self, epoch: int, tr: dict, va: dict | None, lr: float, spent: StepState) -> dict:
        """One ``log.csv`` row; ``lr`` is the rate after the epoch's schedule step, i.e. the one
        the next epoch trains at (a plateau drop shows on the epoch that triggered it).
        ``seconds`` and ``cpu_s`` are the epoch's wall and CPU time over every session that ran
        it (``spent.sums.wall``/``cpu``); CPU counts the decoding workers too."""
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": tr["loss"],
            "train_err": tr["top1_err"],
            "img_s": tr["img_s"],
        }
        if va:
            row |= {"val_loss": va["loss"], "val_err": va["top1_err"], "val_top5_err": va["top5_err"]}
        row["seconds"] = spent.sums.wall
        row["cpu_s"] = spent.sums.cpu
        row["bad_images"] = tr.get("bad_images", 0)
        if self.is_main:
            msg = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            self.log(msg)
        return row

    def write_log(self, history: list[dict]) -> None:
        """``log.csv`` rewritten from the checkpointed history: a resumed run never repeats a row."""
        if not self.is_main or not history:
            return
        fields = list(dict.fromkeys(k for row in history for k in row))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(history)
        atomic_write(self.root / "log.csv", buf.getvalue().encode())

    def write_curves(self, history: list[dict]) -> None:
        from .plots import plot_curves  # matplotlib only when a PNG is wanted

        if self.is_main and history:
            plot_curves(history, self.root / "curves.png")

    def ensure_best(self) -> None:
        """A run stopped before any held-out comparison (``train.max_steps``) still leaves a
        ``best.safetensors``: its last weights, the only ones it has."""
        if self.is_main and not (self.ckpt / "best.safetensors").is_file():
            self._copy_best(self.ckpt / "last.safetensors")

    def load_best(self, model) -> None:
        """Rank 0 loads the held-out-best weights into ``model`` (if a best checkpoint exists)."""
        path = self.ckpt / "best.safetensors"
        if self.is_main and path.is_file():
            model.load_state_dict(read_model_file(path)[0])

    def finish(self, result: dict) -> None:
        if self.is_main:
            atomic_write(self.root / "result.json", json.dumps(result, indent=1).encode())
