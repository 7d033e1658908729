"""``[ddp_study]`` plans: parsed with one-line errors, every run launched under torchrun with its
keys, summaries kept, and a results block written inside the report's own prose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verydeep.cli import main
from verydeep.study.ddp_study import BEGIN, END, DdpSpec, launch_command, render_block
from verydeep.study.plans import splice

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_a_plan_names_its_rows_once():
    with pytest.raises(ValueError, match="each row needs a name"):
        DdpSpec(config="c.toml", rows=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sets'\]"):
        DdpSpec(config="c.toml", rows=[{"name": "a", "sets": []}])
    with pytest.raises(ValueError, match="nproc_per_node"):
        DdpSpec(config="c.toml", rows=[{"name": "a"}], nproc_per_node=0)


def test_every_run_is_torchrun_with_the_rows_keys_and_its_seed():
    spec = DdpSpec(config="q.toml", nproc_per_node=4, base=["data.workers=0"],
                   rows=[{"name": "p", "set": ["dist.grad_comm=powersgd"], "seeds": [0, 3]}])  # fmt: skip
    argv = launch_command(spec, spec.rows[0], 3)
    assert argv[:4] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert argv[4:10] == ["-m", "verydeep", "train", "--config", "q.toml", "--no-progress"]
    keys = argv[11::2]
    assert keys == [
        "data.workers=0",
        "dist.grad_comm=powersgd",
        "train.seed=3",
        "train.out_dir=runs/ddp-study/p-s3",
    ]


def _result(err: float) -> dict:
    return {"result": {"epochs": 2, "test": {"top1_err": err, "images": 10000}}, "log": [{"seconds": 60.0}]}


def test_the_block_gives_each_run_and_each_rows_mean_and_spread():
    spec = DdpSpec(config="q.toml", rows=[{"name": "fp32"}], hardware="2 cores")
    results = {"fp32-s0": _result(0.11) | {"row": "fp32"}, "fp32-s1": _result(0.12) | {"row": "fp32"}}
    block = render_block(spec, results, "verydeep study --config g.toml")
    assert "| fp32-s0 | 2 | 11.00% | 1.0 min |" in block
    assert "| fp32 | 2 | 11.50% | 1.00 points |" in block
    assert "One binomial standard error on 10,000 test images at 11.5%: 0.32 points." in block
    doc = "# Scaling\n\nprose before\n\n" + block + "\n\nprose after\n"
    again = splice(doc, block.replace("11.00%", "10.00%"), BEGIN, END)
    assert (
        again.startswith("# Scaling\n\nprose before")
        and again.endswith("prose after\n")
        and "10.00%" in again
    )


@pytest.mark.slow
def test_a_plan_runs_under_torchrun_and_reports(fmnist_root, tmp_path, monkeypatch):
    config = tmp_path / "tiny.toml"
    config.write_text(
        '[model]\narch = "A"\nwidth_mult = 0.125\nfc_width = 16\ncrop_size = 32\n'
        "[data]\nsubset = 200\nworkers = 0\n[optim]\nbatch_size = 32\n"
        '[train]\nepochs = 1\nprecision = "fp32"\ndevice = "cpu"\n'
    )
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'[ddp_study]\nconfig = "{config}"\nout_dir = "{tmp_path / "runs"}"\n'
        f'results_dir = "{tmp_path / "results"}"\nreport = "{tmp_path / "SCALING.md"}"\n'
        '[[ddp_study.rows]]\nname = "fp16"\nset = ["dist.grad_comm=fp16"]\n'
    )
    monkeypatch.setenv("PYTHONPATH", SRC)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["study", "--config", str(plan)]) == 0
    saved = json.loads((tmp_path / "results" / "fp16-s0" / "config.json").read_text())
    assert saved["dist"]["grad_comm"] == "fp16" and saved["model"]["width_mult"] == 0.125
    assert "| fp16-s0 | 1 |" in (tmp_path / "SCALING.md").read_text()
    assert main(["study", "--config", str(plan), "--report-only"]) == 0  # from the summaries alone
