"""The fine-tuning study (``verydeep study`` on a ``[finetune_study]`` plan): plan, runs, report.

Oracles: SciPy's paired t-test (its statistic is the difference over the paired standard error),
the source's own outputs (each import path must reproduce them), and photos whose colour a
trained source already tells apart (its FC7 descriptors must separate them).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
from _tiny_nets import PREP, trained_tiny
from test_finetune import CLASSES, photo_folder

from verydeep.cli import main
from verydeep.io.checkpoint import Meta, save_model
from verydeep.study.finetune_plan import FinetuneSpec, PlannedRun, Row, plan_runs, repeats
from verydeep.study.finetune_report import BEGIN, END, paired
from verydeep.study.plans import splice

ROWS = """
[[finetune_study.rows]]
name = "all"
start = "source"
[[finetune_study.rows]]
name = "svm"
start = "source"
method = "svm"
[[finetune_study.rows]]
name = "scratch"
start = "scratch"
set = ["model.init=glorot"]
[[finetune_study.rows]]
name = "random"
start = "random"
[[finetune_study.rows]]
name = "pth"
start = "pth"
set = ["finetune.layers=fc8"]
"""


def write_plan(tmp_path, source, rows: str = ROWS, **extra) -> str:
    keys = {
        "source": str(source),
        "source_command": "make-the-source --now",
        "out_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
        "report": str(tmp_path / "REPORT.md"),
        "base": [
            "train.epochs=2",
            "optim.batch_size=4",
            "data.workers=0",
            "data.scale=[224]",
            "data.val_fraction=0.25",
            "train.precision=fp32",
        ],
        "svm_scales": [224],
        "repeat_best": 1,
        "compare": [["all", "scratch"], ["svm", "random"]],
    } | extra
    lines = ["[finetune_study]", *(f"{k} = {json.dumps(v)}" for k, v in keys.items())]
    lines += ["[[finetune_study.datasets]]", 'name = "colours"', f'root = "{tmp_path / "photos"}"']
    path = tmp_path / "plan.toml"
    path.write_text("\n".join(lines) + "\n" + rows)
    return str(path)


@pytest.fixture
def study(tmp_path, one_thread):
    photo_folder(tmp_path / "photos", train=6, val=5)
    source = tmp_path / "source.safetensors"
    save_model(source, trained_tiny(), Meta(preprocess=PREP.to_dict(), classes=CLASSES, train_scale=[224]))
    return tmp_path, write_plan(tmp_path, source)


def test_paired_standard_error_is_scipys_paired_t_test():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60).tolist()
    a = {"pred": rng.integers(0, 3, 60).tolist(), "labels": labels}
    b = {"pred": rng.integers(0, 3, 60).tolist(), "labels": labels}
    diff, se = paired(a, b)
    ca = np.equal(a["pred"], labels).astype(float)
    cb = np.equal(b["pred"], labels).astype(float)
    t = scipy.stats.ttest_rel(ca, cb).statistic
    assert diff == pytest.approx(ca.mean() - cb.mean())
    assert diff / se == pytest.approx(t)


def test_the_best_rows_are_repeated_ties_in_plan_order():
    spec = FinetuneSpec(
        source="s",
        datasets=[{"name": "d", "root": "r"}],
        rows=[{"name": n, "start": "source"} for n in ("a", "b", "c")],
        repeat_seeds=[1, 2],
    )
    got = repeats(spec, {"d/a": 0.5, "d/b": 0.7, "d/c": 0.5})
    assert [(r.row.name, r.seed) for r in got] == [("b", 1), ("b", 2), ("a", 1), ("a", 2)]
    assert got[0].name == "d/b-seed1"


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"name": "x", "start": "imagenet"}, "start must be one of"),
        ({"name": "x", "start": "source", "method": "knn"}, "method must be train or svm"),
        ({"name": "x", "start": "scratch", "method": "svm"}, "an svm row trains nothing"),
        ({"name": "x", "start": "source", "lr": 1}, "unknown key(s) ['lr']"),
    ],
)
def test_a_bad_row_is_refused_in_one_line(row, words):
    with pytest.raises(ValueError) as e:
        FinetuneSpec(source="s", datasets=[{"name": "d", "root": "r"}], rows=[row])
    assert words in str(e.value) and "\n" not in str(e.value)


def test_compare_names_rows_of_the_plan():
    with pytest.raises(ValueError, match="two row names"):
        FinetuneSpec(
            source="s",
            datasets=[{"name": "d", "root": "r"}],
            rows=[{"name": "a", "start": "source"}],
            compare=[["a", "b"]],
        )


def test_a_missing_source_says_how_to_make_it_and_writes_nothing(tmp_path, capsys):
    plan = write_plan(tmp_path, tmp_path / "absent.safetensors")
    assert main(["study", "--config", plan]) == 2
    err = capsys.readouterr().err.strip()
    assert "absent.safetensors not found; make it with: make-the-source --now" in err and "\n" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_the_study_runs_every_row_then_resumes_and_reports(study, capsys):
    tmp_path, plan = study
    (tmp_path / "REPORT.md").write_text(f"# Prose\n\nbefore\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    assert main(["study", "--config", plan, "--no-progress"]) == 0
    results = tmp_path / "results" / "colours"
    rows = {p.name: json.loads((p / "finetune.json").read_text()) for p in results.iterdir()}
    best = max(("all", "svm", "scratch", "random", "pth"), key=lambda n: (rows[n]["accuracy"], -len(n)))
    assert set(rows) == {"all", "svm", "scratch", "random", "pth", f"{best}-seed1"}
    for r in rows.values():
        assert r["n"] == 15 and r["labels"] == sorted(r["labels"])
        assert r["accuracy"] == pytest.approx(np.mean(np.equal(r["pred"], r["labels"])))
    # the source already tells the colours apart: its FC7 descriptors separate the photos
    assert rows["svm"]["accuracy"] == 1.0
    assert rows["all"]["lr"] == 0.001 and rows["scratch"]["lr"] == 0.01
    assert (results / "all" / "log.csv").is_file() and (results / "all" / "config.json").is_file()
    # each import path reproduces the source's outputs
    starts = json.loads((tmp_path / "results" / "starts.json").read_text())
    assert set(starts) == {"pth", "source"} and "RGB 0-1" in starts["pth"]["input"]
    assert starts["source"]["meta"]["arch"] == "A"  # an imported file: no run directory to quote
    assert starts["pth"]["max_abs_logit_diff"] < 1e-3 * starts["pth"]["logit_scale"]
    report = (tmp_path / "REPORT.md").read_text()
    assert (
        report.startswith("# Prose\n\nbefore\n\n") and report.endswith("\n\nafter\n") and "old" not in report
    )
    assert "| 100.0 ± 0.0 |" in report and "- all against scratch:" in report
    # a rerun trains nothing and renders the same block
    stamp = (results / "all" / "finetune.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["study", "--config", plan, "--no-progress"]) == 0
    assert "finetune_study: colours/" not in capsys.readouterr().err
    assert (results / "all" / "finetune.json").stat().st_mtime_ns == stamp
    assert (tmp_path / "REPORT.md").read_text() == report
    assert main(["study", "--config", plan, "--report-only"]) == 0
    assert (tmp_path / "REPORT.md").read_text() == report


def test_scratch_takes_the_source_shape(study):
    _, plan = study
    from verydeep.study.finetune_runner import train_overrides

    spec = FinetuneSpec.from_toml(plan)
    run = next(r for r in plan_runs(spec) if r.row.name == "scratch")
    keys = train_overrides(spec, run, None)
    assert {"model.arch=A", "model.width_mult=0.125", "model.fc_width=32", "model.crop_size=32"} <= set(keys)
    assert not any(k.startswith("train.init_from") for k in keys)
    assert (
        train_overrides(spec, PlannedRun(run.dataset, Row("x", "source"), 1), "s.st")[-1]
        == "train.init_from=s.st"
    )


def test_splice_appends_a_block_to_a_report_without_one():
    assert splice("# Title\n", f"{BEGIN}\nx\n{END}", BEGIN, END) == f"# Title\n\n{BEGIN}\nx\n{END}\n"


def test_the_committed_plan_parses():
    spec = FinetuneSpec.from_toml("experiments/finetune.toml")
    assert {d.name for d in spec.datasets} == {"critters", "hymenoptera"}
    starts = {r.start for r in spec.rows}
    assert {"source", "scratch", "random", "pth", "h5", "caffemodel"} <= starts
    assert {r.method for r in spec.rows} == {"train", "svm"}
