"""scripts/hostile_cases.py keeps working: one class of its cases, run as RELIABILITY.md says.

The whole run (about 75 cases, several minutes) is the report's; here the divergence class
runs end to end, so a change to the CLI that breaks the script's set-up or checks fails CI."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_hostile_case_script_runs_a_class_as_promised():
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "scripts" / "hostile_cases.py"), "--only", "divergence"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "3 of 3 cases as promised" in r.stdout, r.stdout
