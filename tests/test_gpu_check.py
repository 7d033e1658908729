"""scripts/gpu_check.sh on the CPU at toy sizes (issue 19, item 5): every step it would run on a
GPU (the cuda-marked tests, the bench, training on photographs, torchrun) runs and reports."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(shared_data, tmp_path):
    env = os.environ | {"OUT": str(tmp_path / "out"), "VERYDEEP_GPU_SLICE": str(tmp_path / "slice")}
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    for step in ("tests", "bench", "train", "torchrun"):
        assert f"  {step}: ok" in r.stdout, r.stdout[-3000:]
    assert "400 photographs" in r.stdout  # 10 classes x (30 + 10)
    assert (tmp_path / "out" / "bench.json").is_file() and "img/s" in r.stdout
