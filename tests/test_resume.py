"""Crash-safe checkpoints: a kill at every file-system step of a save, SIGKILLed runs resumed
bit-identically, divergence stopping with the last good checkpoint intact."""

import contextlib
import csv
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from procs import children
from safetensors.torch import load_file

from verydeep.cli import main
from verydeep.config import RunConfig
from verydeep.io.checkpoint import load_model
from verydeep.io.resume import CheckpointSet, config_conflicts
from verydeep.train import fit

TINY = [
    "model.arch=A",
    "model.width_mult=0.125",
    "model.fc_width=32",
    "model.crop_size=32",
    "model.init=glorot",
    "data.subset=200",  # 180 training images, batch 32: 5 steps per epoch
    "optim.batch_size=32",
    "train.precision=fp32",
    "train.eval_test=false",
    "train.device=cpu",
]
SRC = str(Path(__file__).resolve().parents[1] / "src")


class Killed(BaseException):
    """Stands for SIGKILL: raised at one file-system change; after it no change happens."""


@contextmanager
def killed_at(k: int):
    """The k-th rename/link/unlink raises ``Killed``; every later one too (a dead process acts no more)."""
    seen, dead = [0], [False]

    def guard(real):
        def call(*a, **kw):
            if dead[0]:
                raise Killed
            seen[0] += 1
            if seen[0] == k:
                dead[0] = True
                raise Killed
            return real(*a, **kw)

        return call

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", guard(os.replace))
        mp.setattr(os, "link", guard(os.link))
        mp.setattr(Path, "unlink", guard(Path.unlink))
        yield


def save(folder: Path, step: int, version: str = "") -> None:
    ck = CheckpointSet(folder)
    tag = f"{step}{version}"
    ck.write(
        step,
        lambda p: p.write_bytes(f"w{tag}".encode()),
        {"step": {"global_step": step}, "tag": tag},
        {"tag": tag},
    )


def read(folder: Path) -> str:
    """The tag of the committed set, after checking its three files belong together."""
    weights, state, rng = CheckpointSet(folder).read()
    assert weights.read_bytes() == f"w{state['tag']}".encode() and rng["tag"] == state["tag"]
    return state["tag"]


def test_a_kill_at_any_point_of_a_save_leaves_a_consistent_set(tmp_path):
    base = tmp_path / "base"
    save(base, 1)
    save(base, 2)
    outcomes = []
    for k in range(1, 100):
        d = tmp_path / f"k{k}"
        shutil.copytree(base, d)
        try:
            with killed_at(k):
                save(d, 3)
        except Killed:
            outcomes.append(read(d))
            # reading finishes an interrupted commit: last.safetensors is the committed weights
            assert (d / "last.safetensors").read_bytes() == f"w{outcomes[-1]}".encode()
            save(d, 3)  # the resumed run saves step 3 again: everything is consistent and pruned
            assert read(d) == "3"
            assert sorted(p.name for p in d.iterdir()) == [
                "last.json", "last.safetensors", "step-000000003.rng0.pt",
                "step-000000003.safetensors", "step-000000003.state.pt",
            ]  # fmt: skip
            continue
        break
    # every rename/link/unlink of a save was a kill point; before the commit the old set stands
    assert len(outcomes) >= 6 and set(outcomes) == {"2", "3"}
    assert outcomes.index("3") > 0 and all(t == "3" for t in outcomes[outcomes.index("3") :])


def test_last_safetensors_follows_the_committed_weights(tmp_path):
    save(tmp_path, 5)
    save(tmp_path, 6)
    assert (tmp_path / "last.safetensors").read_bytes() == b"w6"
    assert not list(tmp_path.glob("step-000000005*"))


def test_damaged_manifest_and_missing_files_give_one_line_errors(tmp_path):
    save(tmp_path, 1)
    (tmp_path / "step-000000001.state.pt").unlink()
    with pytest.raises(ValueError, match="missing"):
        CheckpointSet(tmp_path).read()
    (tmp_path / "last.json").write_text("{not json")
    with pytest.raises(ValueError, match="damaged"):
        CheckpointSet(tmp_path).read()
    (tmp_path / "last.json").unlink()
    with pytest.raises(ValueError, match="holds no committed checkpoint"):
        CheckpointSet(tmp_path).read()
    (tmp_path / "last.json").write_text('{"step": 1, "weights": "step-000000001.safetensors", "state": "x"}')
    (tmp_path / "x").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ValueError, match="not a readable training state"):
        CheckpointSet(tmp_path).read()


def test_a_manifest_names_files_of_its_own_folder_only(tmp_path):
    save(tmp_path, 1)
    outside = tmp_path.parent / "elsewhere.safetensors"
    outside.write_bytes(b"secret")
    m = (tmp_path / "last.json").read_text()
    for bad in (str(outside), "../elsewhere.safetensors", "."):
        (tmp_path / "last.json").write_text(m.replace("step-000000001.safetensors", bad))
        before = (tmp_path / "last.safetensors").read_bytes()
        with pytest.raises(ValueError, match="not a file of"):
            CheckpointSet(tmp_path).read()
        assert (tmp_path / "last.safetensors").read_bytes() == before  # nothing copied in


@pytest.mark.parametrize("damage", ["missing", "stale"])
def test_a_kill_between_the_commit_and_the_best_copy_is_repaired(fmnist_root, tmp_path, damage):
    run = tmp_path / "run"
    o = [*TINY, "data.val_fraction=0.1", "train.epochs=1", f"train.out_dir={run}"]
    fit(RunConfig.from_sources(overrides=o), progress=False)
    best, last = run / "checkpoints" / "best.safetensors", run / "checkpoints" / "last.safetensors"
    assert best.read_bytes() == last.read_bytes()  # epoch 1 improved on nothing: it is the best
    if damage == "missing":  # killed before the first copy
        best.unlink()
    else:  # killed before the copy of a later best: best still holds older weights
        best.write_bytes((run / "checkpoints" / "last.safetensors").read_bytes()[:-8] + b"oldbytes")
    fit(RunConfig.from_sources(overrides=o), progress=False)  # the resume: nothing left to train
    assert best.read_bytes() == last.read_bytes()


def test_config_conflicts_name_what_changed():
    a = RunConfig.from_sources(overrides=["model.arch=A"]).to_dict()
    b = RunConfig.from_sources(overrides=["model.arch=A", "train.epochs=90", "data.workers=2"]).to_dict()
    assert config_conflicts(a, b) == []
    c = RunConfig.from_sources(overrides=["model.arch=B", "optim.lr=0.1"]).to_dict()
    assert config_conflicts(a, c) == ["model.arch ('A' -> 'B')", "optim.lr (0.0 -> 0.1)"]


def test_a_run_from_before_a_setting_existed_still_resumes():
    new = RunConfig.from_sources(overrides=["model.arch=A"]).to_dict()
    old = {sec: dict(kv) for sec, kv in new.items()}
    del old["optim"]["schedule"], old["optim"]["warmup_epochs"]  # added after the run started
    assert config_conflicts(old, new) == []
    changed = RunConfig.from_sources(overrides=["model.arch=A", "optim.schedule=cosine"]).to_dict()
    assert config_conflicts(old, changed) == ["optim.schedule ('auto' -> 'cosine')"]


def _train_cmd(out: Path, *extra: str) -> list[str]:
    sets = [a for o in [*TINY, f"train.out_dir={out}", *extra] for a in ("--set", o)]
    return [sys.executable, "-m", "verydeep", "train", "--no-progress", *sets]


def _committed_step(out: Path) -> int:
    try:
        return int(__import__("json").loads((out / "checkpoints" / "last.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_sigkilled_run_resumes_bit_identical(fmnist_root, tmp_path):
    """SIGKILL at random points (mid-epoch, mid-save), resume each time, end == straight run."""
    steps = 8  # 5 steps per epoch: the run crosses an epoch end
    seed = int(os.environ.get("VERYDEEP_KILL_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    env = os.environ | {"PYTHONPATH": SRC}
    # the straight run is a subprocess too: nothing a previous test left in this process
    # (thread count, global flags) can make its sums differ from the killed runs'
    subprocess.run(
        _train_cmd(tmp_path / "a", f"train.max_steps={steps}"), env=env, check=True, capture_output=True
    )
    out = tmp_path / "b"
    kills = []
    for target in sorted(rng.sample(range(1, steps - 1), 3)):
        proc = subprocess.Popen(
            _train_cmd(out, f"train.max_steps={steps}", "train.checkpoint_every=1"),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        while _committed_step(out) < target and proc.poll() is None:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.3))  # lands anywhere in the next step, saves included
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, f"run ended before the kill (seed {seed}): {err[-500:]}"
        kills.append(_committed_step(out))
    subprocess.run(_train_cmd(out, f"train.max_steps={steps}"), env=env, check=True, capture_output=True)
    a = load_file(tmp_path / "a" / "checkpoints" / "last.safetensors")
    b = load_file(out / "checkpoints" / "last.safetensors")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), (
        f"differs by {diff} after kills at steps {kills} (seed {seed})"
    )
    log = (out / "log.csv").read_text().splitlines()
    # one epoch ended, logged once although the run was killed around it; then the part of
    # epoch 2 that max_steps allowed, marked partial
    assert [r.split(",")[0] for r in log[1:]] == ["1", "2"] and log[2].endswith(",1"), (seed, kills, log)


def test_a_kill_after_the_final_checkpoint_still_logs_the_partial_epoch(fmnist_root, tmp_path):
    """Killed after the last step's checkpoint was committed but before its log row was written:
    the resume has no step left, yet writes the partial epoch's row from the saved sums, with
    the first session's time (its held-out pass not counted twice)."""
    o = [
        *TINY,
        "train.max_steps=7",
        "train.checkpoint_every=1",
        f"train.out_dir={tmp_path}",
        "data.workers=0",
    ]
    fit(RunConfig.from_sources(overrides=o), progress=False)
    log = tmp_path / "log.csv"
    whole = log.read_text().splitlines()
    assert [r.split(",")[0] for r in whole[1:]] == ["1", "2"] and whole[2].endswith(",1")
    log.write_text("\n".join(whole[:2]) + "\n")  # as the kill left it
    weights = (tmp_path / "checkpoints" / "last.safetensors").read_bytes()
    fit(RunConfig.from_sources(overrides=o), progress=False)
    again = log.read_text().splitlines()
    cols = whole[0].split(",")
    keep = [
        cols.index(c)
        for c in ("epoch", "lr", "train_loss", "train_err", "val_err", "seconds", "cpu_s", "partial")
    ]
    assert [[r.split(",")[i] for i in keep] for r in again[1:]] == [
        [r.split(",")[i] for i in keep] for r in whole[1:]
    ]
    assert (tmp_path / "checkpoints" / "last.safetensors").read_bytes() == weights  # nothing retrained


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_divergence_stops_with_one_line_and_the_last_good_checkpoint_intact(fmnist_root, tmp_path, capsys):
    args = ["train", "--no-progress"] + [
        a for o in [*TINY, f"train.out_dir={tmp_path}", "optim.lr=1000", "train.checkpoint_every=1"]
        for a in ("--set", o)
    ]  # fmt: skip
    assert main(args) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("verydeep train: stopped: non-finite loss or gradient at step 1")
    assert not any("Traceback" in line for line in err)
    ckpt = tmp_path / "checkpoints"
    before = _digests(ckpt)
    model, _ = load_model(ckpt / "last.safetensors")  # the weights after the one good step
    assert all(p.isfinite().all() for p in model.parameters())
    assert main(args) == 3  # resuming diverges again at once, and writes nothing
    assert _digests(ckpt) == before and not (tmp_path / "result.json").exists()


def test_a_run_that_cannot_make_progress_ends_with_exit_3_and_finite_weights(fmnist_root, tmp_path, capsys):
    # skip mode: after the first step every loss is non-finite; skipping them all is no progress
    o = [*TINY, f"train.out_dir={tmp_path}", "optim.lr=1000", "train.on_nonfinite=skip", "train.epochs=2"]
    assert main(["train", "--no-progress", *[a for x in o for a in ("--set", x)]]) == 3
    err = capsys.readouterr().err
    assert "steps of epoch 1 had a non-finite loss" in err and "Traceback" not in err
    assert not (tmp_path / "checkpoints" / "last.json").exists()  # nothing was committed


def test_non_finite_weights_are_never_committed(tmp_path):
    from verydeep.engine import NonFiniteLossError, StepState
    from verydeep.io.checkpoint import Meta
    from verydeep.io.run_dir import RunDir
    from verydeep.models.vgg import VGG
    from verydeep.schedule import PlateauSchedule

    net = VGG("A", num_classes=2, width_mult=0.125, fc_width=8, crop_size=32)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    run = RunDir(tmp_path, is_main=True, progress=False)
    run.save(net, Meta(), opt, PlateauSchedule(0.1), StepState(global_step=1))
    good = _digests(tmp_path / "checkpoints")
    with torch.no_grad():
        net.classifier[0].weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="non-finite by step 2"):
        run.save(net, Meta(), opt, PlateauSchedule(0.1), StepState(global_step=2))
    assert _digests(tmp_path / "checkpoints") == good


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None)


def _torchrun(overrides: list[str]) -> subprocess.Popen:
    """``verydeep train`` on 2 CPU ranks (gloo) under torchrun, one restart allowed."""
    sets = [a for o in overrides for a in ("--set", o)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--max-restarts=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{_free_port()}",
           "-m", "verydeep", "train", "--no-progress", *sets]  # fmt: skip
    env = os.environ | {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_torchrun_restarts_a_killed_worker_and_resumes(fmnist_root, tmp_path):
    """2 CPU ranks (gloo); rank 1 SIGKILLed mid-run; torchrun --max-restarts=1 restarts both,
    which resume from the committed checkpoint and end where the same 2 ranks end uninterrupted.
    (The restarted ranks must not read the dead round's gloo addresses from torchrun's shared
    store: distributed.init prefixes the group's keys per restart. Without that this failed
    about one run in three, "Connection refused" or a hang.)"""
    steps = 20  # 4 epochs of 5 steps; rank 1 is killed after step 2
    ddp_exact = ["model.dropout=0", "data.scale=[224]", "data.flip=false", "data.colour_shift=0"]
    common = [*TINY, *ddp_exact, f"train.max_steps={steps}", "train.checkpoint_every=1"]
    # the reference is the same 2 ranks uninterrupted, not one process: one process's sums differ
    # in rounding, and on Fashion-MNIST's many near-tied max-pool windows 3e-8 after one step
    # became 2e-4 after five (measured with 1 against 2 threads), the size of a lost step
    one = _torchrun([*common, f"train.out_dir={tmp_path / 'one'}"])
    _, err_one = one.communicate(timeout=180)
    assert one.returncode == 0, err_one[:6000]
    out = tmp_path / "two"
    proc = _torchrun([*common, f"train.out_dir={out}"])
    try:
        deadline = time.time() + 120
        while _committed_step(out) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        victim = next((p for p in children(proc.pid) if _rank_of(p) == 1), None)
        assert victim is not None, f"rank 1 not found (torchrun exit code {proc.poll()})"
        os.kill(victim, signal.SIGKILL)
        killed_at = _committed_step(out)
        _, err = proc.communicate(timeout=180)
    finally:  # never leave a launcher and its workers behind
        for pid in [*children(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, err[:6000]
    assert killed_at < steps and "resuming A run" in err  # it did restart and resume
    a = load_file(tmp_path / "one" / "checkpoints" / "last.safetensors")
    b = load_file(out / "checkpoints" / "last.safetensors")
    for k in a:  # a resume that lost or replayed a step moves weights by lr x gradient
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_a_resumed_epoch_without_a_held_out_split_is_the_uninterrupted_epoch(fmnist_root, tmp_path):
    """val_fraction=0: the plateau rule and the log read the training loss of the whole epoch,
    and a run stopped mid-epoch 2 must see the same numbers as one that never stopped (issue 17,
    item 6): the epoch's running sums travel in the checkpoint."""
    o = [*TINY, "data.val_fraction=0", "train.epochs=3", "optim.patience=1", "data.workers=0"]
    fit(RunConfig.from_sources(overrides=[*o, f"train.out_dir={tmp_path / 'a'}"]), progress=False)
    b = [*o, f"train.out_dir={tmp_path / 'b'}"]
    fit(RunConfig.from_sources(overrides=[*b, "train.max_steps=7"]), progress=False)  # 2 of epoch 2's 5 steps
    with (tmp_path / "b" / "log.csv").open() as fh:
        first = list(csv.DictReader(fh))[1]  # epoch 2's partial row: its first session's time
    fit(RunConfig.from_sources(overrides=b), progress=False)
    with (tmp_path / "b" / "log.csv").open() as fh:
        whole = list(csv.DictReader(fh))[1]
    # the resumed epoch's time counts both sessions (the first one's travels in the checkpoint),
    # and CPU time includes the decoding workers' (none here: workers=0)
    assert first["partial"] == "1" and float(first["cpu_s"]) > 0 and float(first["seconds"]) > 0
    assert float(whole["seconds"]) > float(first["seconds"]) and float(whole["cpu_s"]) > float(first["cpu_s"])
    rows = [(tmp_path / r / "log.csv").read_text().splitlines() for r in ("a", "b")]
    cols = rows[0][0].split(",")
    keep = [cols.index(c) for c in ("epoch", "lr", "train_loss", "train_err")]
    pick = lambda lines: [[ln.split(",")[i] for i in keep] for ln in lines[1:]]  # noqa: E731
    assert pick(rows[0]) == pick(rows[1])
    a, b = (load_file(tmp_path / r / "checkpoints" / "last.safetensors") for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_disk_that_fills_mid_run_then_frees_resumes_bit_identical(
    fmnist_root, tmp_path, capsys, monkeypatch
):
    """ENOSPC at a mid-run save: one line, exit 2, the committed set intact; once space is
    back, the resumed run ends with the weights of a run that never stopped (issue 17, item 2)."""
    o = [*TINY, "train.max_steps=7", "train.checkpoint_every=2", "data.workers=0"]
    fit(RunConfig.from_sources(overrides=[*o, f"train.out_dir={tmp_path / 'a'}"]), progress=False)
    real, calls = os.replace, []

    def fills(src, dst):
        calls.append(dst)
        if len(calls) >= 6:  # the saves of step 2 went through; the disk fills during step 4's
            raise OSError(28, os.strerror(28), str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", fills)
    argv = [
        "train",
        "--no-progress",
        *[a for s in [*o, f"train.out_dir={tmp_path / 'b'}"] for a in ("--set", s)],
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "No space left" in err[-1] and "Traceback" not in "\n".join(err), err
    monkeypatch.setattr(os, "replace", real)
    assert not list((tmp_path / "b").rglob("*.tmp")) and _committed_step(tmp_path / "b") == 2
    assert main(argv) == 0
    a, b = (load_file(tmp_path / r / "checkpoints" / "last.safetensors") for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_each_rank_saves_and_restores_its_own_gpus_generator_only(monkeypatch):
    """Issue 43, item 12: get_rng_state_all saved every visible GPU's state, and restoring it
    where fewer GPUs are visible failed. Now one state, the rank's device's; a file of the old
    form restores the current device's entry, or nothing where that GPU is not there."""
    from verydeep.io import run_dir

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s: calls.append(int(s[0])))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("every GPU's state saved"))
    state = run_dir.rng_state()
    assert int(state["cuda"][0]) == 7
    run_dir.set_rng_state(state)
    old = dict(state, cuda=[torch.tensor([0], dtype=torch.uint8), torch.tensor([1], dtype=torch.uint8)])
    run_dir.set_rng_state(old)  # 2 GPUs then, this rank's is device 1
    run_dir.set_rng_state(dict(state, cuda=[torch.tensor([0], dtype=torch.uint8)]))  # 1 GPU then: skipped
    assert calls == [7, 1]
