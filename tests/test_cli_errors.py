"""Command-line mistakes: one line naming the problem, exit code 2, no traceback, no file touched."""

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from verydeep.cli import main

TINY = [
    "model.arch=A",
    "model.width_mult=0.125",
    "model.fc_width=16",
    "model.crop_size=32",
    "data.val_fraction=0",
    "data.workers=0",
    "optim.batch_size=4",
    "train.max_steps=1",
    "train.precision=fp32",
    "train.device=cpu",
    "train.eval_test=false",
]


def train(capsys, *sets: str, config: str | None = None) -> tuple[int, str]:
    argv = ["train", "--no-progress", *(["--config", config] if config else [])]
    argv += [a for s in sets for a in ("--set", s)]
    code = main(argv)
    return code, capsys.readouterr().err


def one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert lines[-1].startswith("verydeep train: error: "), err
    assert all(n in lines[-1] for n in needles), lines[-1]


def digests(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def folder(root: Path, classes: tuple[str, ...]) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 40), (60 * i, 80, 200 - 40 * i)).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("sets", "toml", "needles"),
    [
        ((), None, ("config file not found", "nope.toml")),
        (("model.colour=red",), "", ("unknown key", "colour")),
        ((), "[modle]\narch = 'A'\n", ("unknown section", "modle")),
        ((), "[optim]\nlr = 'fast'\n", ("optim.lr expects float",)),
        ((), "[optim\n", ("c.toml is not valid TOML", "Expected ']'")),
        ((), "model = 3\n", ("[model] must be a table of keys, got int",)),  # was a TypeError traceback
        ((), "[[model]]\narch = 'A'\n", ("[model] must be a table of keys, got list",)),
        (("data.dataset=imagefolder", "data.root="), "", ("data.root must be a folder (not empty)",)),
        (("model.arch=Z",), "", ("unknown VGG config 'Z'",)),
        (("data.on_bad_image=ignore",), "", ("data.on_bad_image must be one of skip | fail",)),
    ],
)
def test_bad_configs(tmp_path, capsys, sets, toml, needles):
    config = None if toml is None else tmp_path / "c.toml"
    if toml:
        config.write_text(toml)
    path = str(config) if toml else (str(tmp_path / "nope.toml") if toml is None else None)
    one_line_error(*train(capsys, *sets, f"train.out_dir={tmp_path / 'run'}", config=path), *needles)
    assert not (tmp_path / "run").exists()


def test_missing_and_empty_dataset_folders(tmp_path, capsys):
    run = f"train.out_dir={tmp_path / 'run'}"
    missing = ["data.dataset=imagefolder", f"data.root={tmp_path / 'absent'}"]
    one_line_error(*train(capsys, *TINY, *missing, run), "image folder not found", "absent")
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    empty = ["data.dataset=imagefolder", f"data.root={tmp_path / 'empty'}"]
    one_line_error(*train(capsys, *TINY, *empty, run), "no images found")
    one_line_error(*train(capsys, *TINY, f"data.root={tmp_path / 'absent'}", run), "Fashion-MNIST not found")
    assert not (tmp_path / "run").exists()


def test_existing_checkpoints_are_never_overwritten(tmp_path, capsys):
    data = ["data.dataset=imagefolder", f"data.root={folder(tmp_path / 'pets', ('cats', 'dogs'))}"]
    run = f"train.out_dir={tmp_path / 'run'}"
    assert train(capsys, *TINY, *data, run)[0] == 0
    before = digests(tmp_path / "run")
    # a different config into the same folder
    one_line_error(*train(capsys, *TINY, *data, run, "model.arch=B"), "different config", "model.arch")
    # starting afresh over it
    one_line_error(*train(capsys, *TINY, *data, run, "train.resume=false"), "already holds a checkpoint")
    # same config, but data whose classes are not the checkpoint's
    other = ["data.dataset=imagefolder", f"data.root={folder(tmp_path / 'zoo', ('cats', 'emus'))}"]
    one_line_error(*train(capsys, *TINY, *other, run), "trained on 2 classes", "emus")
    assert digests(tmp_path / "run") == before
    # an output path that is a file
    (tmp_path / "file").write_text("precious")
    one_line_error(*train(capsys, *TINY, *data, f"train.out_dir={tmp_path / 'file'}"), "not a directory")
    # ... or lies above it (this was a bare "[Errno 20] Not a directory")
    under = f"train.out_dir={tmp_path / 'file' / 'a' / 'run'}"
    one_line_error(*train(capsys, *TINY, *data, under), f"{tmp_path / 'file'} is a file, not a directory")
    assert (tmp_path / "file").read_text() == "precious"
    # resuming the same config is allowed (and may run longer)
    assert train(capsys, *TINY, *data, run, "train.max_steps=2")[0] == 0


def test_a_second_run_on_a_busy_out_dir_is_refused(tmp_path, capsys):
    import subprocess
    import sys
    import time

    data = ["data.dataset=imagefolder", f"data.root={folder(tmp_path / 'pets', ('cats', 'dogs'))}"]
    run = tmp_path / "run"
    # another process holds the run directory, as a training started a moment earlier would
    code = f"from verydeep.io.run_dir import RunDir\nimport time\nwith RunDir({str(run)!r}, True).lock():\n"
    code += "    print('held', flush=True)\n    time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line_error(
            *train(capsys, *TINY, *data, f"train.out_dir={run}"), "is in use by another run", str(holder.pid)
        )
        assert not (run / "config.json").exists()  # the refused run touched nothing
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert train(capsys, *TINY, *data, f"train.out_dir={run}")[0] == 0  # free again once it is gone


def test_counts_that_disagree_with_the_data_are_refused_and_the_config_is_not_changed(tmp_path, capsys):
    from verydeep.config import RunConfig
    from verydeep.train import fit

    data = ["data.dataset=imagefolder", f"data.root={folder(tmp_path / 'pets', ('cats', 'dogs'))}"]
    run = f"train.out_dir={tmp_path / 'run'}"
    one_line_error(
        *train(capsys, *TINY, *data, run, "model.num_classes=3"), "model.num_classes is 3", "2 classes"
    )
    one_line_error(*train(capsys, *TINY, *data, run, "model.in_channels=1"), "model.in_channels is 1")
    cfg = RunConfig.from_sources(overrides=[*TINY, *data, run])
    before = cfg.to_dict()
    fit(cfg, progress=False)
    assert cfg.to_dict() == before  # fit worked on a copy (num_classes stays 0: "from the data")


def test_a_run_stopped_by_max_steps_leaves_a_complete_run_directory(tmp_path, capsys):
    import csv

    data = ["data.dataset=imagefolder", f"data.root={folder(tmp_path / 'pets', ('cats', 'dogs'))}"]
    run = tmp_path / "run"
    assert (
        train(capsys, *TINY, *data, f"train.out_dir={run}", "data.val_fraction=0.25", "optim.batch_size=2")[0]
        == 0
    )
    for name in ("config.json", "log.csv", "curves.png", "result.json", "checkpoints/best.safetensors"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert len(rows) == 1 and rows[0]["partial"] == "1" and rows[0]["epoch"] == "1"
    # localize train --init can start from it: best is the last (only) weights
    assert (run / "checkpoints" / "best.safetensors").read_bytes() == (
        run / "checkpoints" / "last.safetensors"
    ).read_bytes()


def test_weights_that_score_nan_are_never_kept(tmp_path, capsys):
    # lr 1000 under skip: one step of each two-step epoch trains, its weights stay finite, but
    # they score NaN on the held-out split; the run used to end with exit 0 and keep them
    from safetensors.torch import load_file

    for c, green in (("a", 90), ("b", 20)):  # 3 photos a class: 2 steps an epoch, 1 of them skipped
        (tmp_path / "pets" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (48 + 5 * i, 40), (70 * i, green, 30)).save(tmp_path / "pets" / c / f"{i}.png")
    data = ["data.dataset=imagefolder", f"data.root={tmp_path / 'pets'}"]
    run = tmp_path / "run"
    sets = [*TINY, *data, "data.val_fraction=0.25", "optim.batch_size=2", "optim.lr=1000"]
    sets += ["train.on_nonfinite=skip", "train.max_steps=20", f"train.out_dir={run}"]
    code, err = train(capsys, *sets)
    assert code == 3 and "Traceback" not in err, err
    assert "held-out loss" in err or "had a non-finite loss" in err, err
    last = run / "checkpoints" / "last.safetensors"
    if last.is_file():  # an epoch that scored finite was kept: it must be finite
        assert all(t.isfinite().all() for t in load_file(str(last)).values() if t.is_floating_point())
    for row in (run / "log.csv").read_text().splitlines()[1:] if (run / "log.csv").is_file() else []:
        assert "nan" not in row, row


@pytest.mark.parametrize(
    "drops, needle",
    [("0.75,0.5", "lr_drops (--lr-drops) must be increasing fractions"), ("half", "comma-separated list")],
)
def test_localize_rate_drops_are_checked_before_any_work(tmp_path, capsys, drops, needle):
    # parsed by the CLI (argparse exits 2 on text), range-checked by LocTrainConfig (main returns 2)
    out = tmp_path / "pcr.safetensors"
    argv = ["localize", "train", "--data", str(tmp_path), "--init", str(tmp_path / "cls.safetensors")]
    try:
        code = main([*argv, "--out", str(out), "--lr-drops", drops])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert needle in err.strip().splitlines()[-1], err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["eval", "--scales", ""], "test scales must be in [224, 4096] paper units"),
        (["eval", "--scales", "200"], "test scales must be in [224, 4096] paper units"),
        (["predict", "--scales", "384,5000"], "test scales must be in [224, 4096] paper units"),
        (["eval", "--threshold", "-3"], "merge threshold for iou must be in [0, 1]"),
        (["eval", "--threshold", "nan"], "merge threshold for iou must be in [0, 1]"),
        (
            ["eval", "--measure", "centre", "--threshold", "-0.1"],
            "merge threshold for centre must be in [0, inf]",
        ),
        (["tune", "--scale-sets", ";"], "give at least one scale set"),
        (["tune", "--scale-sets", "384;0"], "test scales must be in [224, 4096] paper units"),
        (["tune", "--loc", "pcr.safetensors@"], "test scales must be in [224, 4096] paper units"),
    ],
)
def test_localize_scales_and_merging_are_checked_before_any_work(tmp_path, capsys, argv, needle):
    # each of these ran (Q = 0, a negative IoU) or failed only after the dense pass over the split
    # (an empty scale set: IndexError); now one line before any checkpoint or photograph is read
    action, *flags = argv
    where = ["photo.jpg"] if action == "predict" else ["--data", str(tmp_path), "--split", "val"]
    nets = [] if "--loc" in flags else ["--loc", str(tmp_path / "loc.safetensors")]
    out = tmp_path / "out.json"
    json_flag = [] if action == "predict" else ["--json", str(out)]
    code = main(
        ["localize", action, *where, *nets, "--cls", str(tmp_path / "c.safetensors"), *json_flag, *flags]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("verydeep localize: error: "), err
    assert needle in err.strip().splitlines()[-1], err
    assert not out.exists()


def test_a_voc_test_split_that_does_not_exist_is_refused_not_skipped(tmp_path, capsys):
    # it used to train and end with no test error at all
    from voc_tree import make_voc

    root = make_voc(tmp_path / "voc", {f"{c}{i}": [(c, 0, (1, 1, 30, 30))] for c in "ab" for i in range(3)})
    for f in (root / "ImageSets/Main/train.txt").read_text().split():
        Image.new("RGB", (40, 40)).save(root / "JPEGImages" / f"{f}.jpg")
    voc = [
        "data.dataset=voc",
        f"data.root={root}",
        "data.test_split=tset",
        "train.eval_test=true",  # TINY turns it off
        f"train.out_dir={tmp_path / 'run'}",
    ]
    one_line_error(*train(capsys, *TINY, *voc), "data.test_split 'tset'", "tset.txt", "train.eval_test=false")
    assert not (tmp_path / "run").exists()


def test_bench_save_path_is_checked_before_any_timing(tmp_path, capsys, monkeypatch):
    import verydeep.bench as bench

    ran = []
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: ran.append(a) or {})
    (tmp_path / "file").write_text("x")
    assert main(["bench", "--quick", "--only", "lrn", "--save", str(tmp_path / "file" / "b.json")]) == 2
    assert "is not a directory" in capsys.readouterr().err and ran == []


@pytest.mark.parametrize(
    "out, needle", [("adir", "is a directory"), ("loc.pt", "must be a .safetensors file")]
)
def test_localize_train_checks_its_output_before_training(tmp_path, capsys, monkeypatch, out, needle):
    # the output was checked by the final write, after every step had run; a .pt name was taken
    import verydeep.localization.api as api

    monkeypatch.setattr(api, "fit_localizer", lambda *a, **k: pytest.fail("trained before the check"))
    (tmp_path / "adir").mkdir()
    argv = ["localize", "train", "--data", str(tmp_path), "--init", str(tmp_path / "cls.safetensors")]
    assert main([*argv, "--out", str(tmp_path / out)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("verydeep localize: error: ") and needle in line and "\n" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]


def test_split_folders_are_never_read_as_classes(tmp_path, capsys):
    # class folders beside val/ trained on val as a third class (and tested on those same photos);
    # features on a root with train/ and val/ labelled every image "train" or "val", exit 0
    from verydeep.io.checkpoint import Meta, save_model
    from verydeep.models.vgg import VGG

    root = folder(tmp_path / "pets", ("cats", "dogs"))
    folder(root / "val", ("cats", "dogs"))
    run = tmp_path / "run"
    one_line_error(
        *train(capsys, *TINY, "data.dataset=imagefolder", f"data.root={root}", f"train.out_dir={run}"),
        f"{root} holds split folders (val/), not only classes: put the training classes in {root / 'train'}",
    )
    assert not run.exists()
    split = folder(tmp_path / "split" / "train", ("cats", "dogs")).parent
    folder(split / "val", ("cats", "dogs"))
    net = VGG("A", num_classes=2, width_mult=0.125, fc_width=16, crop_size=32)
    save_model(tmp_path / "n.safetensors", net, Meta(classes=["cats", "dogs"]))
    argv = ["features", str(tmp_path / "n.safetensors"), str(split), "--out", str(tmp_path / "f.npz")]
    assert main([*argv, "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"verydeep features: error: {split} holds split folders (train/, val/), not only classes: "
        "name one with --split"
    )
    assert main([*argv, "--workers", "0", "--split", "val"]) == 0 and (tmp_path / "f.npz").is_file()
