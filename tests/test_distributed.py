"""Data parallelism beyond one process (issue 45; issue 43, item 1): one rank under torchrun runs
distributed, every ``dist.grad_comm`` choice trains under gloo with ranks in agreement, two
simulated nodes meet at a c10d rendezvous on 127.0.0.1 and train as one process does, a lost node
rejoins and the job resumes from its committed checkpoint, and a run directory the nodes do not
share is refused."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from procs import children
from safetensors.torch import load_file

from verydeep.distributed import DistEnv

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
TINY = [
    "model.arch=A", "model.width_mult=0.125", "model.fc_width=32", "model.crop_size=32",
    "model.init=glorot", "data.subset=200", "optim.batch_size=32", "train.precision=fp32",
    "train.eval_test=false", "train.device=cpu", "model.dropout=0", "data.scale=[224]",
    "data.flip=false", "data.colour_shift=0", "data.workers=0",
]  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return os.environ | {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


def _train(sets: list[str]) -> list[str]:
    return ["-m", "verydeep", "train", "--no-progress", *[a for s in sets for a in ("--set", s)]]


def _node(endpoint: str, sets: list[str], cwd: Path | None = None, restarts: int = 0) -> subprocess.Popen:
    """One simulated node: a torchrun agent with one worker, in a two-node c10d job."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", "--rdzv-id=verydeep-test",
           f"--max-restarts={restarts}", *_train(sets)]  # fmt: skip
    # each round's rank 0 hosts a fresh store: torch's shared agent store does not let a node
    # that was lost and started again rejoin (docs/SCALING.md)
    env = _env() | {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    return subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _lose(node: subprocess.Popen) -> None:
    """The whole node at once: its agent and every process under it (torchrun starts each worker
    in a session of its own, so the agent's process group is not enough)."""
    victims, todo = [], [node.pid]
    while todo:
        pid = todo.pop()
        victims.append(pid)
        todo += children(pid)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    node.wait()


def _finish(*procs: subprocess.Popen, timeout: float = 240) -> list[str]:
    errs = []
    try:
        for p in procs:
            errs.append(p.communicate(timeout=timeout)[1])
    finally:
        for p in procs:
            if p.poll() is None:
                _lose(p)  # never leave an agent and its workers behind
    return errs


def test_torchrun_makes_even_one_rank_distributed():
    assert not DistEnv.from_environ({}).enabled
    assert not DistEnv.from_environ({"RANK": "0", "WORLD_SIZE": "1"}).enabled  # set by hand: plain
    launched = DistEnv.from_environ({"RANK": "0", "WORLD_SIZE": "1", "TORCHELASTIC_RUN_ID": "x"})
    assert launched.enabled and launched.world_size == 1


def test_one_rank_under_torchrun_trains_through_ddp(fmnist_root, tmp_path):
    """Issue 43, item 1: torchrun --nproc_per_node=1 ran the plain loop a second time."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone"]
    sets = [*TINY, "train.max_steps=2", f"train.out_dir={tmp_path / 'one'}"]
    r = subprocess.run([*cmd, *_train(sets)], env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data parallel: 1 rank (gloo), gradients all-reduced as fp32" in r.stderr


@pytest.fixture(scope="module")
def every_choice(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp") / "result.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(HERE / "ddp_worker.py"), str(out)]  # fmt: skip
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    return torch.load(out, weights_only=True)


def _one_process() -> torch.Tensor:
    """The same 5 steps in one process on the whole batch: what fp32 DDP must equal."""
    sys.path.insert(0, str(HERE))
    from ddp_worker import STEPS, batch, tiny

    net, (x, y) = tiny(), batch()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(STEPS):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.mark.parametrize("choice", ["fp32", "fp16", "bf16", "powersgd"])
def test_every_grad_comm_choice_trains_under_gloo(every_choice, choice):
    got = every_choice[choice]
    assert got["ranks_agree"]  # DDP's invariant, whatever the compression
    want, start = _one_process(), _initial()
    moved, ref = got["weights"] - start, want - start
    if choice == "fp32":
        torch.testing.assert_close(got["weights"], want, rtol=1e-5, atol=1e-6)
    elif choice in ("fp16", "bf16"):  # the gradients rounded on the way: the same steps, nearly
        assert float((moved - ref).norm() / ref.norm()) < (2e-3 if choice == "fp16" else 2e-2)
    else:  # PowerSGD: a rank-2 approximation after 2 plain steps, error feedback keeps the rest
        assert torch.isfinite(got["weights"]).all()
        assert float(F.cosine_similarity(moved, ref, dim=0)) > 0.5
        assert not torch.equal(got["weights"], want)
    # the bytes each step handed to all_reduce, counted in the worker (fp32: DDP's own C++ path)
    if choice in ("fp16", "bf16"):
        assert got["bytes"] == [2 * start.numel()] * 5  # every gradient, 2 bytes each
    if choice == "powersgd":
        full = 4 * start.numel()
        assert got["bytes"][:2] == [full, full] and max(got["bytes"][2:]) < full / 3


def _initial() -> torch.Tensor:
    sys.path.insert(0, str(HERE))
    from ddp_worker import tiny

    return torch.cat([p.detach().flatten() for p in tiny().parameters()])


def test_a_choice_the_backend_cannot_do_is_one_line_at_start_up(monkeypatch):
    from types import SimpleNamespace

    import verydeep.distributed as vd
    from verydeep.bench.comm_bench import one_rank_group

    def refuse(*_a, **_k):
        raise RuntimeError("Unsupported dtype BFloat16\nmore lines")

    comm = SimpleNamespace(grad_comm="bf16")
    with one_rank_group():
        monkeypatch.setattr(vd.dist, "all_reduce", refuse)
        with pytest.raises(
            ValueError, match=r"^dist.grad_comm=bf16: the gloo backend cannot all-reduce"
        ) as e:
            vd.check_comm(comm, torch.device("cpu"))
    assert "\n" not in str(e.value) and "Unsupported dtype BFloat16" in str(e.value)


@pytest.mark.slow
def test_two_nodes_on_loopback_train_as_one_process(fmnist_root, tmp_path):
    """Issue 45, item 1: --nnodes=2 (one rank each) meeting at a c10d rendezvous on 127.0.0.1."""
    # test_train's two-rank check: batch 16 on 300 images, 3 steps (near-tied max-pool windows
    # turn rounding into visible differences over longer runs)
    short = [*TINY, "data.subset=300", "optim.batch_size=16", "train.max_steps=3"]
    one = [*short, f"train.out_dir={tmp_path / 'one'}"]
    r = subprocess.run([sys.executable, *_train(one)], env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    two, endpoint = [*short, f"train.out_dir={tmp_path / 'two'}"], f"127.0.0.1:{_port()}"
    errs = _finish(_node(endpoint, two), _node(endpoint, two))
    assert "data parallel: 2 ranks (gloo)" in "".join(errs), errs
    a = load_file(tmp_path / "one" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "two" / "checkpoints" / "last.safetensors")
    for k in a:  # summed in another order over two ranks: float rounding, not a different step
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def _wait_for_port(endpoint: str, timeout: float = 60) -> None:
    host, port = endpoint.split(":")
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {endpoint}")


def _committed(out: Path) -> int:
    try:
        return int(json.loads((out / "checkpoints" / "last.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_a_lost_node_rejoins_and_the_job_resumes_from_its_checkpoint(fmnist_root, tmp_path):
    """Node 2 (agent and worker) is killed mid-run and started again, as a cluster scheduler
    would; node 1's agent (--max-restarts=1) restarts its worker; both resume from the last
    committed checkpoint and end where an uninterrupted two-node run ends, bit for bit."""
    steps = 12
    common = [*TINY, f"train.max_steps={steps}", "train.checkpoint_every=1"]
    ref = [*common, f"train.out_dir={tmp_path / 'ref'}"]
    endpoint = f"127.0.0.1:{_port()}"
    _finish(_node(endpoint, ref), _node(endpoint, ref))
    out, endpoint = tmp_path / "run", f"127.0.0.1:{_port()}"
    sets = [*common, f"train.out_dir={out}"]
    first = _node(endpoint, sets, restarts=1)  # node 1 hosts the rendezvous store, as on a cluster
    _wait_for_port(endpoint)
    second = _node(endpoint, sets, restarts=1)
    try:
        deadline = time.time() + 120
        while _committed(out) < 3 and time.time() < deadline and first.poll() is None:
            time.sleep(0.01)
        _lose(second)
        lost_at = _committed(out)
        again = _node(endpoint, sets, restarts=1)
        errs = _finish(first, again)
    finally:
        for p in (first, second):
            if p.poll() is None:
                _lose(p)
    assert first.returncode == 0 and again.returncode == 0, errs
    assert lost_at < steps and "resuming A run" in "".join(errs)
    a = load_file(tmp_path / "ref" / "checkpoints" / "last.safetensors")
    b = load_file(out / "checkpoints" / "last.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.slow
def test_a_run_directory_the_nodes_do_not_share_is_refused(fmnist_root, tmp_path):
    """A relative out_dir from two working directories: each node sees its own folder, as
    node-local disks would. Both ranks stop with one line; nothing trains."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sets, endpoint = [*TINY, "train.max_steps=2", "train.out_dir=run"], f"127.0.0.1:{_port()}"
    nodes = [_node(endpoint, sets, cwd=tmp_path / "a"), _node(endpoint, sets, cwd=tmp_path / "b")]
    errs = _finish(*nodes)
    assert all(p.returncode != 0 for p in nodes)
    assert "is not shared: 1 of 2 ranks do not see rank 0's files there" in "".join(errs)
    assert not list((tmp_path / "a").rglob("*.safetensors")) and not list(
        (tmp_path / "b").rglob("*.safetensors")
    )


def test_grad_comm_settings_are_checked_and_resume_rules_hold():
    from verydeep.config import RunConfig
    from verydeep.io.resume import config_conflicts

    with pytest.raises(ValueError, match=r"dist\.powersgd_rank apply with dist\.grad_comm=powersgd only"):
        RunConfig.from_sources(overrides=["dist.powersgd_rank=2"])
    for bad, words in [
        ("dist.grad_comm=int8", "dist.grad_comm must be one of"),
        ("dist.bucket_mb=0", "dist.bucket_mb"),
    ]:
        with pytest.raises(ValueError, match=words):
            RunConfig.from_sources(overrides=[bad])
    old = RunConfig.from_sources(overrides=["dist.grad_comm=powersgd"]).to_dict()
    faster = RunConfig.from_sources(overrides=["dist.grad_comm=powersgd", "dist.bucket_mb=100"]).to_dict()
    assert config_conflicts(old, faster) == []  # how gradients travel may change on resume
    assert config_conflicts(old, RunConfig().to_dict()) == ["dist.grad_comm ('powersgd' -> 'fp32')"]


def test_resolving_a_gpu_leaves_cudnn_autotuning_to_training(monkeypatch):
    """Issue 43, item 8: eval and features resolved their device through the same call as
    training and so autotuned every dense shape; only fit turns autotuning on."""
    import verydeep.distributed as vd

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert vd.resolve_device("cuda", what="eval device") == torch.device("cuda", 0)
    assert torch.backends.cudnn.benchmark is False
