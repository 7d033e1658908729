"""The transfer and localisation plans (``verydeep study`` on ``[transfer_study]`` and
``[localization_study]``): plans, runs, resumption, reports.

Oracles: the commands a user would run by hand (``verydeep features`` + ``verydeep transfer``,
``verydeep localize eval`` with the tuned flags) must give the summaries the plan wrote; the
committed reports must re-render byte for byte from the committed summaries.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _tiny_nets import PREP, trained_tiny
from test_finetune import CLASSES, photo_folder

from verydeep.cli import main
from verydeep.io.checkpoint import Meta, load_model, save_model
from verydeep.study.loc_study import LocSpec, candidates
from verydeep.study.plans import plan_kind
from verydeep.study.transfer_study import TransferSpec, cells

REPO = Path(__file__).resolve().parents[1]


def toml(table: str, keys: dict, arrays: dict[str, list[dict]]) -> str:
    """A plan's TOML text (JSON strings and lists are TOML's; a table is written as dotted keys)."""

    def pairs(d: dict) -> list[str]:
        flat = {f"{k}.{kk}": vv for k, v in d.items() if isinstance(v, dict) for kk, vv in v.items()}
        flat |= {k: v for k, v in d.items() if not isinstance(v, dict)}
        return [f"{k} = {json.dumps(v)}" for k, v in flat.items()]

    lines = [f"[{table}]", *pairs(keys)]
    for name, entries in arrays.items():
        for e in entries:
            lines += [f"[[{table}.{name}]]", *pairs(e)]
    return "\n".join(lines) + "\n"


# --- the committed plans ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("plan", "kind"),
    [
        ("experiments/imagewoof.toml", "study"),
        ("experiments/finetune.toml", "finetune_study"),
        ("experiments/gradcomm.toml", "ddp_study"),
        ("experiments/transfer.toml", "transfer_study"),
        ("experiments/localization.toml", "localization_study"),
    ],
)
def test_each_committed_plan_is_its_kind(plan, kind):
    assert plan_kind(REPO / plan) == kind


@pytest.mark.parametrize(
    ("plan", "doc"),
    [
        ("experiments/transfer.toml", "docs/TRANSFER.md"),
        ("experiments/localization.toml", "docs/LOCALIZATION.md"),
    ],
)
def test_the_committed_reports_re_render_byte_for_byte(plan, doc, tmp_path, monkeypatch):
    """--report-only from the committed summaries alone (no weights, nothing run) gives the doc."""
    copy = tmp_path / "doc.md"
    shutil.copy(REPO / doc, copy)
    monkeypatch.chdir(REPO)
    args = [
        "study",
        "--config",
        plan,
        "--report-only",
        "--report",
        str(copy),
        "--out-dir",
        str(tmp_path / "x"),
    ]
    assert main(args) == 0
    assert copy.read_text() == (REPO / doc).read_text()
    assert not (tmp_path / "x").exists()


def test_the_committed_plans_name_every_committed_summary():
    """Every summary under experiments/results/{transfer,localization} belongs to a plan entry."""
    spec = TransferSpec.from_toml(REPO / "experiments/transfer.toml")
    planned = {f"{c.name}.json" for c in cells(spec)}
    found = {
        str(p.relative_to(REPO / spec.results_dir)) for p in (REPO / spec.results_dir).glob("*/*/*.json")
    }
    assert found <= planned and len(found) == 170
    loc = LocSpec.from_toml(REPO / "experiments/localization.toml")
    names = {c.name for c in candidates(loc)}
    tuned = {f"{p.parent.name}/{p.stem[4:]}" for p in (REPO / loc.results_dir).glob("*/val-*.json")}
    assert {n for n in tuned if not n.endswith("-defaults")} <= names


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"descriptors": ["none"]}, "no such descriptor or dataset ['none']"),
        ({"datasets": ["elsewhere"]}, "no such descriptor or dataset ['elsewhere']"),
        ({"colour": "red"}, "unknown key(s) ['colour']"),
        ({"layer": "fc9"}, "descriptor layer must be"),
    ],
)
def test_a_bad_transfer_source_is_refused_in_one_line(entry, words):
    source = {"name": "s", "checkpoint": "c", "descriptors": ["one"], "datasets": ["d"]} | entry
    with pytest.raises(ValueError) as e:
        TransferSpec(
            sources=[source], descriptors={"one": {"scales": [256]}}, datasets=[{"name": "d", "root": "r"}]
        )
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"runs": [{"name": "r", "classifier": "nobody"}]}, "no such classifier or run"),
        ({"runs": [{"name": "r", "classifier": "c", "nets": ["scr-half"]}]}, "nets are some of"),
        ({"fusions": [{"name": "f", "sets": {"x": ["q/scr-all"]}}]}, "each set lists run/net entries"),
        ({"runs": [{"name": "r", "classifier": "c", "box_size": "sqrt"}]}, "box_size must be one of"),
        ({"runs": [{"name": "r", "classifier": "c", "steps_fc": -1}]}, "localize.steps must be"),
        ({"scale_sets": ["256", "100"]}, "test scales must be in [224, 4096]"),
    ],
)
def test_a_bad_localisation_plan_is_refused_in_one_line(extra, words):
    keys = {"data": "voc", "classifiers": [{"name": "c"}], "runs": [{"name": "r", "classifier": "c"}]}
    with pytest.raises(ValueError) as e:
        LocSpec(**(keys | extra))
    assert words in str(e.value) and "\n" not in str(e.value)


# --- a transfer plan, end to end -------------------------------------------------------------
@pytest.fixture
def transfer_plan(tmp_path, one_thread):
    photo_folder(tmp_path / "photos", train=6, val=5)
    source = tmp_path / "source.safetensors"
    save_model(source, trained_tiny(), Meta(preprocess=PREP.to_dict(), classes=CLASSES, train_scale=[224]))
    keys = {
        "out_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
        "report": str(tmp_path / "REPORT.md"),
        "table": ["tiny"],
        "choose_from": ["one", "two"],
        "table_descriptor": "one",
    }
    sets = [{"name": "colours", "root": str(tmp_path / "photos"), "protocols": ["recall"]}]
    sources = [
        {"name": "tiny", "checkpoint": str(source), "descriptors": ["one", "two"], "datasets": ["colours"]}
    ]
    sources[0]["command"] = "make-it --now"
    text = toml("transfer_study", keys, {"datasets": sets, "sources": sources})
    text += "[transfer_study.descriptors]\none = { scales = [224] }\n"
    text += 'two = { scales = [224, 256], combine = "average" }\n'
    (tmp_path / "plan.toml").write_text(text)
    return tmp_path, str(tmp_path / "plan.toml"), str(source)


def test_the_transfer_plan_runs_what_the_commands_run_then_resumes(transfer_plan, capsys):
    tmp_path, plan, source = transfer_plan
    assert main(["study", "--config", plan, "--no-progress"]) == 0
    results = tmp_path / "results" / "tiny"
    made = sorted(str(p.relative_to(results)) for p in results.rglob("*.json"))
    assert made == [f"{n}/colours-{d}-recall.json" for n in ("trained", "twin") for d in ("one", "two")]
    # the oracle: verydeep features + verydeep transfer by hand, on the same checkpoint
    for split in ("train", "val"):
        out = str(tmp_path / f"{split}.safetensors")
        args = [
            source,
            str(tmp_path / "photos"),
            "--split",
            split,
            "--scales",
            "224",
            "256",
            "--combine",
            "average",
        ]
        assert main(["features", *args, "--out", out, "--no-progress"]) == 0
    by_hand = tmp_path / "by-hand.json"
    assert (
        main(
            [
                "transfer",
                str(tmp_path / "train.safetensors"),
                str(tmp_path / "val.safetensors"),
                "--json",
                str(by_hand),
            ]
        )
        == 0
    )
    planned = json.loads((results / "trained" / "colours-two-recall.json").read_text())
    assert planned == json.loads(by_hand.read_text())
    assert planned["value"] == 1.0  # the source tells the colours apart
    # the twin: the source's convention and shape, fresh weights
    twin, meta = load_model(tmp_path / "runs" / "tiny" / "twin.safetensors")
    src, src_meta = load_model(source)
    assert meta.preprocess == src_meta.preprocess and twin.build_kwargs == src.build_kwargs
    assert not torch.equal(twin.features[0].weight, src.features[0].weight)
    report = (tmp_path / "REPORT.md").read_text()
    assert "| tiny | 100.0 / 100.0 |" in report  # colours: even random features tell them apart
    # a rerun computes nothing and renders the same block; --report-only too
    stamp = (results / "trained" / "colours-one-recall.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["study", "--config", plan, "--no-progress"]) == 0
    assert "transfer_study:" not in capsys.readouterr().err
    assert (results / "trained" / "colours-one-recall.json").stat().st_mtime_ns == stamp
    assert main(["study", "--config", plan, "--report-only"]) == 0
    assert (tmp_path / "REPORT.md").read_text() == report


def test_a_missing_transfer_source_says_how_to_make_it_and_writes_nothing(transfer_plan, capsys):
    tmp_path, plan, source = transfer_plan
    Path(source).unlink()
    assert main(["study", "--config", plan, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "source.safetensors not found; make it with: make-it --now" in err and "\n" not in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "REPORT.md").exists()


# --- a localisation plan, end to end ---------------------------------------------------------
@pytest.fixture
def loc_plan(tmp_path, mini_voc, one_thread):
    root = mini_voc
    tiny = ["model.arch=A", "model.width_mult=0.125", "model.fc_width=32", "model.crop_size=32"]
    keys = {
        "data": str(root),
        "fit_split": "train",
        "choose_split": "train",
        "out_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
        "report": str(tmp_path / "REPORT.md"),
        "scale_sets": ["256", "256,384"],
        "flip": False,
        "classifier_base": [
            "data.workers=0",
            "data.val_fraction=0",
            "optim.batch_size=2",
            "train.max_steps=3",
        ],
    }
    arrays = {
        "classifiers": [{"name": "scratch", "set": [*tiny, "train.eval_test=false"]}],
        "runs": [{"name": "r", "classifier": "scratch", "nets": ["scr-all", "pcr-fc"], "steps": 2}],
        "fusions": [{"name": "f", "sets": {"both": ["r/scr-all", "r/pcr-fc"]}}],
    }
    (tmp_path / "plan.toml").write_text(toml("localization_study", keys, arrays))
    return tmp_path, str(tmp_path / "plan.toml")


def test_the_localisation_plan_reports_what_localize_eval_reports_then_resumes(loc_plan, capsys):
    tmp_path, plan = loc_plan
    assert main(["study", "--config", plan, "--no-progress"]) == 0
    results = tmp_path / "results"
    names = sorted(str(p.relative_to(results)) for p in results.rglob("*.json"))
    assert names == [
        "classifiers/scratch/config.json",
        "classifiers/scratch/result.json",
        "f/tune-both.json",
        "f/val-both.json",
        "r/tune-pcr-fc.json",
        "r/tune-scr-all.json",
        "r/val-pcr-fc.json",
        "r/val-scr-all-defaults.json",
        "r/val-scr-all.json",
    ]
    # the oracle: localize eval by hand with the flags the tuning chose
    runs, cls = (
        tmp_path / "runs",
        tmp_path / "runs" / "classifiers" / "scratch" / "checkpoints" / "best.safetensors",
    )
    flags = json.loads((results / "f" / "tune-both.json").read_text())["best"]["flags"].split()
    locs = ["--loc", str(runs / "r" / "scr-all.safetensors"), "--loc", str(runs / "r" / "pcr-fc.safetensors")]
    out = tmp_path / "by-hand.json"
    args = [
        "localize",
        "eval",
        "--data",
        str(tmp_path / "mini-voc"),
        "--split",
        "val",
        "--train-split",
        "train",
    ]
    assert main([*args, *locs, "--cls", str(cls), *flags, "--json", str(out), "--no-progress"]) == 0
    planned, by_hand = json.loads((results / "f" / "val-both.json").read_text()), json.loads(out.read_text())
    assert {k: v for k, v in planned.items() if k != "cpu_s"} == {
        k: v for k, v in by_hand.items() if k != "cpu_s"
    }
    report = (tmp_path / "REPORT.md").read_text()
    assert "The choice among 3 candidates" in report and "**(chosen)**" in report
    # a rerun trains and tunes nothing
    stamp = (runs / "r" / "scr-all.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["study", "--config", plan, "--no-progress"]) == 0
    assert "localization_study:" not in capsys.readouterr().err
    assert (runs / "r" / "scr-all.safetensors").stat().st_mtime_ns == stamp
    assert (tmp_path / "REPORT.md").read_text() == report


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[transfer_study]\nsources = []\ncolour = 1\n", "unknown key(s) in [transfer_study]: colour"),
        ("[localization_study]\nruns = []\n", "[localization_study] needs data"),
        ("[ddp_study]\nrows = []\n", "[ddp_study] needs config"),
        ("[finetune_study]\nsource = \n", "Invalid value"),
    ],
)
def test_a_bad_plan_file_is_refused_in_one_line(text, words, tmp_path, capsys):
    plan = tmp_path / "plan.toml"
    plan.write_text(text)
    assert main(["study", "--config", str(plan), "--out-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.toml"]


def test_only_runs_the_named_entries_and_leaves_the_report_to_report_only(transfer_plan, capsys):
    tmp_path, plan, _ = transfer_plan
    assert main(["study", "--config", plan, "--only", "elsewhere"]) == 2
    assert "no such entries in the plan: elsewhere" in capsys.readouterr().err
    assert main(["study", "--config", plan, "--only", "tiny", "--no-progress"]) == 0
    assert "write the report with --report-only" in capsys.readouterr().err
    assert len(list((tmp_path / "results" / "tiny").rglob("*.json"))) == 4
    assert not (tmp_path / "REPORT.md").exists()  # runs side by side must not race to write it
    assert main(["study", "--config", plan, "--report-only"]) == 0
    assert "| tiny | 100.0 / 100.0 |" in (tmp_path / "REPORT.md").read_text()
    assert main(["study", "--config", "experiments/finetune.toml", "--only", "all"]) == 2
    assert "--only applies to Section 4 grids" in capsys.readouterr().err
