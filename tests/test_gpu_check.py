"""scripts/gpu_check.sh on the CPU at toy sizes (issues 19, 43): every step it would run on a GPU
(the device tests, the probe, the bench, training on photographs, one rank under torchrun with
each gradient communication) runs and reports, inside its budget, with under 1 MiB in $OUT."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(shared_data, fmnist_root, tmp_path):
    env = os.environ | {"OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work")}
    env |= {"VERYDEEP_GPU_DATA": str(tmp_path / "data"), "FMNIST_SRC": str(fmnist_root)}
    env["GPU_CHECK_BUDGET"] = "600"
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    for step in ("tests", "probe", "bench", "train", "ddp-fp32", "ddp-fp16", "ddp-bf16", "ddp-powersgd"):
        assert f"  {step}: ok" in r.stdout, r.stdout[-3000:]
    assert "1000 photographs" in r.stdout  # 10 classes x (80 + 20)
    out = tmp_path / "out"
    assert json.loads((out / "probe.json").read_text())["training_img_s"]["verydeep_bf16_cl"] > 0
    assert (out / "bench.json").is_file() and (out / "train" / "log.csv").is_file()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert size < 2**20, f"{size} bytes in $OUT"  # what comes back from the device machine is small
    assert not list(out.rglob("*.safetensors"))  # weights stay in $WORK


@pytest.mark.slow
def test_gpu_check_stops_at_once_without_a_cuda_device(tmp_path):
    env = os.environ | {"OUT": str(tmp_path / "out"), "VERYDEEP_GPU_DATA": str(tmp_path / "data")}
    (tmp_path / "data" / "photos").mkdir(parents=True)  # no --make-data needed to reach the guard
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True
    )
    assert r.returncode == 2 and "torch sees no CUDA device here" in r.stderr
