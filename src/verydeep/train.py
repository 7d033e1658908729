"""Training wiring (Section 3.1): config -> data, model, optimiser, schedule -> epochs -> checkpoints.

``fit`` is what ``verydeep train`` calls; it works the same alone or under ``torchrun``. The run
directory gets ``config.json``, ``log.csv``, ``curves.png`` and ``checkpoints/{last,best}``.

Example (two optimiser steps on a Fashion-MNIST subset; skipped where the data is absent):
    >>> import os, tempfile
    >>> from verydeep.config import RunConfig
    >>> from verydeep.train import fit
    >>> if os.path.isdir("/usr/share/datasets/fashion-mnist"):
    ...     cfg = RunConfig.from_sources(overrides=["model.arch=A", "model.width_mult=0.125",
    ...         "model.fc_width=32", "model.crop_size=32", "data.subset=600", "optim.batch_size=64",
    ...         "train.max_steps=2", "train.eval_test=false", f"train.out_dir={tempfile.mkdtemp()}"])
    ...     print(fit(cfg, progress=False)["global_step"])
    ... else:
    ...     print(2)
    2
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from . import distributed
from .build import model_and_optimizer, resolved, training_numerics
from .config import RunConfig
from .data.build import DataBundle, build_data
from .data.loaders import FolderBatches
from .engine import EpochSums, NonFiniteLossError, StepState, train_one_epoch, validate
from .finetune import adopt_source, describe_start, read_source
from .hardware import cpu_seconds
from .io.checkpoint import Meta
from .io.run_dir import RunDir
from .models.vgg import VGG
from .numerics import Numerics
from .optim import set_rate
from .schedule import CosineSchedule, PlateauSchedule, make_schedule

# The host reads the loss sums and non-finite flags every this many steps (a GPU is not stalled
# by a per-step read-back); mid-epoch checkpoints fall on these steps (gcd with checkpoint_every).
SYNC_STEPS = 20


def fit(cfg: RunConfig, progress: bool = True) -> dict:
    """Train until the schedule stops (or ``train.epochs``); returns the final numbers."""
    env = distributed.DistEnv.from_environ()
    device = distributed.resolve_device(cfg.train.device, env)
    if device.type == "cuda":  # one crop size: each conv's autotuning pays off over every step
        torch.backends.cudnn.benchmark = not cfg.train.deterministic  # (not for dense evaluation)
    was = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for it
        torch.use_deterministic_algorithms(True, warn_only=True)
    distributed.init(env, device)
    try:
        return _fit(cfg, env, device, progress)
    finally:
        distributed.shutdown()
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])  # the caller's setting back


def _fit(cfg: RunConfig, env: distributed.DistEnv, device: torch.device, progress: bool) -> dict:
    distributed.seed_everything(cfg.train.seed, env)
    run = RunDir(cfg.train.out_dir, env.is_main, progress, env.rank, env.world_size)
    with run.lock():  # a second run on this out_dir is refused for as long as this one lives
        run.check_shared()  # every rank (every node) reads rank 0's checkpoints from out_dir
        return _fit_locked(cfg, env, device, run)


def _fit_locked(cfg: RunConfig, env: distributed.DistEnv, device: torch.device, run: RunDir) -> dict:
    source = read_source(cfg)  # the checkpoint it starts from (metadata only), or None
    cfg = adopt_source(cfg, source)  # a copy in the source's shape; contradictions refused
    run.check_reuse(cfg)  # before anything is read or written: refuse to clobber another run
    data, accum = build_data(cfg, env, device, source.prep if source else None)
    if source:
        run.log(describe_start(cfg, source, data.preprocess))
    cfg = resolved(cfg, len(data.classes), data.channels)  # a copy: the caller's config is left as given
    numerics = training_numerics(cfg, device)
    model, opt, train_mode = model_and_optimizer(cfg, data, device, numerics)
    sched = make_schedule(cfg.optim, cfg.train.epochs, len(data.train) // accum)
    meta = Meta(
        preprocess=data.preprocess.to_dict(),
        classes=data.classes,
        train_scale=list(cfg.data.scale),
        pca=data.pca.to_dict(),
        config=cfg.to_dict(),
    )
    state = StepState()
    if cfg.train.resume and run.has_checkpoint():
        state = run.restore(model, opt, sched, device, data.classes)
    run.start(cfg, resumed=state.global_step > 0)
    if cfg.train.save_init and state.global_step == 0:
        run.save_init(model, meta)
    distributed.check_comm(cfg.dist, device)
    net: nn.Module = distributed.data_parallel(model, device, cfg.dist) if env.enabled else model
    if env.enabled:
        ranks = f"{env.world_size} rank{'s' if env.world_size > 1 else ''}"
        comm = cfg.dist.grad_comm
        run.log(f"data parallel: {ranks} ({distributed.backend()}), gradients all-reduced as {comm}")
    if cfg.train.compile:
        net = torch.compile(net)
    loop = _Loop(
        cfg=cfg, run=run, data=data, model=model, net=net, opt=opt, sched=sched, meta=meta,
        device=device, accum=accum, numerics=numerics, train_mode=train_mode,
    )  # fmt: skip
    if state.step_in_epoch and _reached(cfg, state):
        # resumed from the checkpoint of the final step, which a kill may have left without the
        # partial epoch's log row: no step runs, the row is rebuilt from the saved epoch sums
        # and time (which the first session saved after its held-out pass: none is added)
        loop.epoch(state, rebuild=True)
    while state.epoch < cfg.train.epochs and not sched.stopped and not _reached(cfg, state):
        loop.epoch(state)
    result = _final_report(run, model, data, state, loop.val_bad, device, numerics)
    run.finish(result)
    return result


@dataclasses.dataclass(frozen=True)
class _EpochStart:
    """Where an epoch (or a resumed epoch's rest) started: its clocks, the time its earlier
    sessions spent, and the run's counters before it."""

    t0: float
    c0: float
    wall0: float
    cpu0: float
    bad_images: int
    skipped_steps: int

    @classmethod
    def of(cls, state: StepState) -> _EpochStart:
        s = state.sums
        return cls(time.perf_counter(), cpu_seconds(), s.wall, s.cpu, state.bad_images, state.skipped_steps)

    def spent(self, state: StepState) -> None:
        """The epoch's wall and CPU time so far, into ``state`` (saved with it)."""
        state.sums.wall = self.wall0 + time.perf_counter() - self.t0
        state.sums.cpu = self.cpu0 + cpu_seconds() - self.c0


@dataclasses.dataclass
class _Loop:
    """What every epoch of a run uses; ``_fit`` builds it once."""

    cfg: RunConfig
    run: RunDir
    data: DataBundle
    model: VGG
    net: nn.Module  # the model, or its DDP / compiled wrapper
    opt: torch.optim.Optimizer
    sched: PlateauSchedule | CosineSchedule
    meta: Meta
    device: torch.device
    accum: int
    numerics: Numerics
    train_mode: Callable[[nn.Module], None]  # net.train(), frozen layers left as in evaluation
    val_bad: int = 0  # unreadable images of the held-out split in its last pass (all ranks)

    def epoch(self, state: StepState, rebuild: bool = False) -> None:
        """One epoch (its rest, if resumed mid-epoch): steps, held-out pass, checkpoint, log.
        ``rebuild``: no step is left (max_steps reached); only the row is written again."""
        cfg, data, run = self.cfg, self.data, self.run
        start, bad = _EpochStart.of(state), _BadCount(data.train, self.device)  # run so far; this epoch
        data.train.set_epoch(state.epoch, start=state.step_in_epoch * self.accum)
        _set_lr(self.opt, self.sched, state.global_step)
        steps = len(data.train) // self.accum  # whole steps: trailing micro-batches are left out
        bar = run.progress_bar(steps, state.step_in_epoch, f"epoch {state.epoch + 1}")

        every = cfg.train.checkpoint_every  # the epoch's last step is saved below, after evaluation

        def on_step(s: StepState, m: dict, n: int) -> None:
            bar.update(m, n)
            # not max_steps' last step: _close saves it after the held-out pass, with that
            # pass's time, so that a rebuilt row (above) has the first session's time
            if every and s.global_step % every == 0 and s.step_in_epoch < steps and not _reached(cfg, s):
                s.bad_images = start.bad_images + bad.count()  # every rank saves
                start.spent(s)
                run.save(self.model, self.meta, self.opt, self.sched, s)

        tr = train_one_epoch(
            self.net,
            data.train,
            self.opt,
            prepare=data.train_prepare,
            device=self.device,
            state=state,
            accum_steps=self.accum,
            numerics=self.numerics,
            on_nonfinite=cfg.train.on_nonfinite,
            on_step=on_step,
            max_steps=cfg.train.max_steps,
            sync_every=math.gcd(SYNC_STEPS, every) if every else SYNC_STEPS,
            main=self.run.is_main,
            set_lr=lambda step: _set_lr(self.opt, self.sched, step),
            train_mode=self.train_mode,
        )
        bar.close()
        _check_progress(state, start.skipped_steps, steps, cfg.train.on_nonfinite)
        tr["bad_images"] = bad.count()
        state.bad_images = start.bad_images + tr["bad_images"]
        va = _validate(self.model, data.val, data.eval_prepare, self.device, self.numerics)
        _check_scores(va, state)
        self.val_bad = va["bad_images"] if va else 0
        if not rebuild:
            start.spent(state)
        self._close(state, tr, va, whole=state.step_in_epoch >= steps, rebuild=rebuild)

    def _close(self, state: StepState, tr: dict, va: dict | None, whole: bool, rebuild: bool) -> None:
        """A whole epoch: the schedule's step, the log row, a checkpoint (best if improved).
        One stopped mid-way (max_steps): a checkpoint (unless rebuilt), and the part done logged."""
        run = self.run
        if whole:
            improved = self.sched.step(1 - va["top1_err"] if va else -tr["loss"])
            state.history.append(run.epoch_row(state.epoch, tr, va, self.sched.lr, state))
            state.epoch, state.step_in_epoch, state.sums = state.epoch + 1, 0, EpochSums()
            cfg = self.cfg
            last = state.epoch >= cfg.train.epochs or self.sched.stopped or _reached(cfg, state)
            if cfg.train.save_epochs or last:
                run.save(self.model, self.meta, self.opt, self.sched, state, best=improved)
                run.ensure_best()  # an earlier best epoch was not saved: these weights stand in
            run.write_log(state.history)
            run.write_curves(state.history)
            return
        if not rebuild:  # a rebuilt row's checkpoint is the one it resumed from
            run.save(self.model, self.meta, self.opt, self.sched, state)
        row = run.epoch_row(state.epoch, tr, va, self.sched.lr, state)
        run.write_log([*state.history, row | {"partial": 1}])  # the file only, not the state
        run.write_curves([*state.history, row])
        run.ensure_best()


def _check_progress(state: StepState, skipped_before: int, steps: int, on_nonfinite: str) -> None:
    """With ``on_nonfinite=skip``, an epoch that skipped more than half of its steps is a run
    that cannot make progress: stop it (exit 3), as ``stop`` would have at the first."""
    skipped = state.skipped_steps - skipped_before
    if on_nonfinite == "skip" and skipped * 2 > steps:
        raise NonFiniteLossError(
            f"{skipped} of {steps} steps of epoch {state.epoch + 1} had a non-finite loss or gradient "
            "and were skipped: the run is not making progress; lower optim.lr"
        )


def _check_scores(va: dict | None, state: StepState) -> None:
    """Finite weights can still score NaN/inf (a forward pass that overflows): such weights are
    not a checkpoint to keep, in either ``on_nonfinite`` mode. Stop (exit 3) before the save,
    so the last good checkpoint stays the last committed one."""
    if va and not math.isfinite(va["loss"]):
        raise NonFiniteLossError(
            f"the held-out loss after epoch {state.epoch + 1} is {va['loss']}: the weights no longer "
            "give finite scores; lower optim.lr"
        )


def _set_lr(opt: torch.optim.Optimizer, sched: PlateauSchedule | CosineSchedule, step: int) -> None:
    """The plateau schedule changes the rate between epochs, the cosine one every step (times
    each group's multiplier: FC8's finetune.head_lr_mult)."""
    set_rate(opt, sched.at_step(step))


def _reached(cfg: RunConfig, state: StepState) -> bool:
    return bool(cfg.train.max_steps) and state.global_step >= cfg.train.max_steps


def _final_report(
    run: RunDir, model: VGG, data, state: StepState, val_bad: int, device, numerics: Numerics
) -> dict:
    """Step counts, unreadable-image counts and, once, the test error of the held-out-best weights."""
    result = {"global_step": state.global_step, "epochs": state.epoch, "skipped_steps": state.skipped_steps}
    result["bad_images"] = {"train": state.bad_images}  # val/test: in the last pass over the split
    if isinstance(data.val, FolderBatches):
        result["bad_images"]["val"] = val_bad
    if data.test is not None:  # reported once, with the held-out-best weights; never for decisions
        run.load_best(model)
        distributed.broadcast_params(model)
        result["test"] = _validate(model, data.test, data.eval_prepare, device, numerics)  # the CLI prints it
        result["bad_images"]["test"] = result["test"].pop("bad_images")
    if any(result["bad_images"].values()):
        run.log(f"unreadable images skipped: {result['bad_images']} (see the warnings above)")
    return result


class _BadCount:
    """Images a loader has skipped as unreadable since this object was made, summed over ranks
    (the loader's own counter runs for the life of the process; 0 for in-memory data)."""

    def __init__(self, batches, device: torch.device) -> None:
        self.batches, self.device = batches, device
        self.start = getattr(batches, "bad_images", 0)

    def count(self) -> int:
        mine = getattr(self.batches, "bad_images", 0) - self.start
        return int(distributed.sum_across([mine], self.device)[0])


def _validate(model: nn.Module, batches, prepare, device: torch.device, numerics: Numerics) -> dict | None:
    """Held-out numbers and the pass's unreadable images, summed over ranks (each rank
    evaluates its shard)."""
    if batches is None:
        return None
    bad = _BadCount(batches, device)
    m = validate(model, batches, prepare, device, numerics)
    n = m["images"]
    loss, e1, e5, n = distributed.sum_across([m["loss"] * n, m["top1_err"] * n, m["top5_err"] * n, n], device)
    return {
        "loss": loss / n,
        "top1_err": e1 / n,
        "top5_err": e5 / n,
        "images": int(n),
        "bad_images": bad.count(),
    }
