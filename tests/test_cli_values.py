"""Bad flag values and bad inputs to eval / predict / features / bench (issue 17, items 12 and
16): one line, exit 2, before any work; predict reports each unreadable file and goes on."""

import json

import pytest
import torch
from PIL import Image

from verydeep.cli import main
from verydeep.evaluation import EvalOptions
from verydeep.features import DescriptorConfig
from verydeep.io.checkpoint import Meta, save_model
from verydeep.models.vgg import VGG


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("values")
    torch.manual_seed(0)
    net = VGG("A", num_classes=2, width_mult=0.125, fc_width=16, crop_size=32)
    save_model(root / "net.safetensors", net, Meta(classes=["a", "b"]))
    for c in "ab":
        (root / "data" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (48 + 9 * i, 40), (90 * i, 100, 20)).save(root / "data" / c / f"{i}.png")
    (root / "adir").mkdir()
    return root


CK, DATA, IMG = "{r}/net.safetensors", "{r}/data", "{r}/data/a/0.png"
CASES = [
    (["eval", CK, "--data", DATA, "--device", "bogus"], "--device"),
    (["eval", CK, "--data", DATA, "--device", "cuda:7"], "CUDA"),
    (["eval", CK, "--data", DATA, "--threads", "-3"], "--threads"),
    (["eval", CK, "--data", DATA, "--grid", "0", "--method", "multicrop"], "--grid"),
    (["eval", CK, "--data", DATA, "--grid", "-2"], "--grid"),
    (["eval", CK, "--data", DATA, "--limit", "-1"], "--limit"),
    (["eval", CK, "--data", DATA, "--scales", "1e9"], "--scales"),
    (["eval", CK, "--data", DATA, "--scales", "big"], "not a number"),
    (["eval", CK, "--data", DATA, "--batch-size", "0"], "--batch-size"),
    (["predict", "-m", CK, IMG, "--top", "-1"], "--top"),
    (["predict", "-m", CK, IMG, "--grid", "0", "--method", "multicrop"], "--grid"),
    (["predict", "-m", CK, IMG, "--device", "bogus"], "--device"),
    (["predict", "-m", CK, IMG, "--method", "dense,centre"], "one --method"),
    (["predict", "-m", CK, IMG, "--heatmap", "{r}/adir"], "is a directory"),
    (["features", CK, DATA, "--out", "{r}/f.npz", "--threads", "-1"], "--threads"),
    (["features", CK, DATA, "--out", "{r}/f.npz", "--device", "bogus"], "--device"),
    (["features", CK, DATA, "--out", "{r}/f.npz", "--scales", "1e7"], "--scales"),
    (["bench", "--device", "bogus"], "--device"),
    # flags that no chosen method reads were ignored without a word
    (["eval", CK, "--data", DATA, "--grid", "3"], "--grid has no effect with --method dense"),
    (["eval", CK, "--data", DATA, "--method", "centre,multicrop", "--average", "softmax"], "--average has"),
    (
        ["predict", "-m", CK, IMG, "--method", "centre", "--dense-align", "topleft", "--grid", "2"],
        "--grid, --dense-align have",
    ),
    (
        ["eval", CK, "--data", DATA, "--method", "centre", "--no-flip"],
        "--no-flip has no effect with --method centre",
    ),
    (
        ["eval", CK, "--data", "fashion-mnist", "--full-decode"],
        "--full-decode has no effect on Fashion-MNIST",
    ),
    (["eval", CK, "--data", "fashion-mnist", "--workers", "4"], "--workers has no effect on Fashion-MNIST"),
    (
        ["features", CK, DATA, "--out", "{r}/f.npz", "--combine", "stack"],
        "--combine has no effect with one scale",
    ),
    (["features", CK, DATA, "--out", "{r}/f.npz", "--normalise-each-scale"], "has no effect with one scale"),
    # a calibration folder was ignored without a word by every mode but int8
    (["eval", CK, "--data", DATA, "--calibrate", DATA], "--calibrate is for --precision int8"),
    (["predict", "-m", CK, IMG, "--calibrate", DATA, "--precision", "bf16"], "int8-checked only, not bf16"),
    (
        ["features", CK, DATA, "--out", "{r}/f.npz", "--calibrate", DATA],
        "is for --precision int8 only, not fp32",
    ),
]


@pytest.mark.parametrize(("argv", "needle"), CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CASES])
def test_bad_values_are_one_line_exit_2(setup, capsys, argv, needle):
    argv = [a.format(r=setup) for a in argv]
    with pytest.raises(SystemExit) as stop:  # argparse exits; errors found later return 2
        raise SystemExit(main(argv))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert stop.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"verydeep {argv[0]}: error: ") and needle in lines[0], err
    assert not (setup / "f.npz").exists()


@pytest.mark.parametrize(
    "kw",
    [{"grid": 0}, {"batch_size": 0}, {"workers": -2}, {"limit": 0}, {"scales": [1e9]}, {"device": "tpu"}],
)
def test_the_library_checks_the_same_bounds(kw):
    with pytest.raises(ValueError):
        EvalOptions(**kw)


def test_declared_ranges_check_types_too():
    from verydeep.transfer import SVMConfig

    with pytest.raises(ValueError, match=r"^eval\.grid must be an integer in \[1, 32\], got 'a'$"):
        EvalOptions(grid="a")
    with pytest.raises(ValueError, match=r"^eval\.batch_size must be an integer"):
        EvalOptions(batch_size=2.5)
    with pytest.raises(ValueError, match=r"^eval\.limit must be an integer"):
        EvalOptions(limit=True)
    assert EvalOptions(limit=None).limit is None and EvalOptions(limit=3).limit == 3
    with pytest.raises(ValueError, match=r"^svm\.folds must be 0 \(one held-out part\) or in \[2, 20\]"):
        SVMConfig(folds=1)
    with pytest.raises(ValueError, match=r"^svm\.cs must be in \(0, inf\), got -1"):
        SVMConfig(cs=(1.0, -1))


def test_descriptor_scales_are_bounded():
    with pytest.raises(ValueError, match=r"descriptor\.scales must be in \(0, 4,096\]"):
        DescriptorConfig(scales=(1e7,), units="pixels")
    with pytest.raises(ValueError, match="--calibrate is for"):
        DescriptorConfig(scales=(256,), calibrate="photos", precision="winograd")
    with pytest.raises(ValueError, match="--calibrate is for"):
        EvalOptions(calibrate="photos", precision="auto")
    assert EvalOptions(calibrate="photos", precision="int8-checked").calibrate == "photos"


def test_predict_reports_bad_files_and_keeps_the_good_ones(setup, capsys, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    good = [setup / "data" / "a" / "0.png", setup / "data" / "b" / "1.png"]
    argv = [
        "predict",
        "-m",
        str(setup / "net.safetensors"),
        str(good[0]),
        str(bad),
        str(tmp_path / "gone.png"),
    ]
    code = main([*argv, str(good[1]), "--json", "--top", "1"])
    out, err = capsys.readouterr()
    assert code == 1  # non-zero: not every file was read
    results = json.loads(out)
    assert [r["path"] for r in results if "top" in r] == [str(g) for g in good]
    assert sum("error" in r for r in results) == 2
    assert err.count("skipped") == 2 and "broken.jpg" in err and "gone.png" in err
    assert "Traceback" not in err


def test_a_bad_image_in_a_feature_worker_is_one_line(setup, capsys, tmp_path):
    data = tmp_path / "data"
    for c in "ab":
        (data / c).mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(data / c / "ok.png")
    (data / "a" / "bad.jpg").write_bytes(b"\xff\xd8 nothing")
    argv = ["features", str(setup / "net.safetensors"), str(data), "--out", str(tmp_path / "f.npz")]
    code = main([*argv, "--on-bad-image", "fail", "--workers", "1", "--scales", "256"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "images:" not in ln]
    assert code == 2 and len(err) == 1 and "bad.jpg" in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "f.npz").exists()


def test_help_imports_neither_torch_nor_the_heavy_libraries():
    """`verydeep --help` and every subcommand's --help answer without importing torch (issue 18,
    item 7: it took 8-13 s); checked by what is imported, not by a timing."""
    import subprocess
    import sys

    probe = (  # building the parser registers every subcommand's arguments
        "import sys; from verydeep.cli import build_parser; build_parser().format_help(); "
        "print(sorted(m for m in ('torch', 'torchvision', 'PIL', 'sklearn', 'tqdm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    for cmd in (["--help"], ["eval", "--help"], ["train", "--help"], ["localize", "train", "--help"]):
        r = subprocess.run([sys.executable, "-m", "verydeep", *cmd], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: verydeep" in r.stdout


def test_torch_free_copies_of_choices_match_the_library():
    from verydeep.cli.export import FORMS as CLI_FORMS
    from verydeep.io.weights.export import FORMS

    assert CLI_FORMS == FORMS


def test_every_flag_has_help_and_every_command_an_example(capsys):
    """Issue 18, item 8: no flag without help, defaults shown, examples per subcommand, --version."""
    import argparse

    from verydeep import __version__
    from verydeep.cli import build_parser

    missing, no_example = [], []

    def walk(parser, prefix):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    if "example" not in (sub.epilog or ""):
                        no_example.append(" ".join([*prefix, name]))
                    walk(sub, [*prefix, name])
            elif not a.help and a.dest != "help":
                missing.append(f"{' '.join(prefix)} {a.option_strings or a.dest}")

    parser = build_parser()
    walk(parser, [])
    assert missing == [] and no_example == []
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    eval_help = " ".join(sub.choices["eval"].format_help().split())
    assert "(default: 64)" in eval_help  # --batch-size's default is shown
    assert "5 (the default) gives 5x5 crops" in eval_help  # --grid's, whose default is None (unset)
    assert "--print-config" in sub.choices["train"].format_help()
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"verydeep {__version__}"


def test_a_pytorch_file_names_the_convert_step(setup, capsys, tmp_path):
    """Issue 18, item 10: `predict -m x.pth` said "header too large"."""
    pth = tmp_path / "vgg.pth"
    torch.save({"w": torch.zeros(2)}, pth)
    code = main(["predict", "-m", str(pth), str(setup / "data" / "a" / "0.png")])
    err = capsys.readouterr().err
    assert code == 2 and "is a PyTorch" in err and "verydeep convert" in err


def test_eval_reads_a_voc_root(tmp_path, capsys):
    """Issue 18, item 10: train reads VOC, so eval does too (largest object's class per image)."""
    root = tmp_path / "voc"
    for d in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (root / d).mkdir(parents=True)
    ids = []
    for i, (name, colour) in enumerate([("cat", (200, 40, 40)), ("dog", (40, 40, 200))] * 2):
        ids.append(f"im{i}")
        Image.new("RGB", (60, 48), colour).save(root / "JPEGImages" / f"im{i}.jpg")
        (root / "Annotations" / f"im{i}.xml").write_text(
            f"<annotation><filename>im{i}.jpg</filename><size><width>60</width><height>48</height></size>"
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>5</xmin><ymin>5</ymin>"
            "<xmax>50</xmax><ymax>40</ymax></bndbox></object></annotation>"
        )
    (root / "ImageSets/Main/val.txt").write_text("\n".join(ids) + "\n")
    torch.manual_seed(0)
    net = VGG("A", num_classes=2, width_mult=0.125, fc_width=16, crop_size=32)
    save_model(tmp_path / "n.safetensors", net, Meta(classes=["cat", "dog"]))
    code = main(["eval", str(tmp_path / "n.safetensors"), "--data", str(root), "--json", "--workers", "0"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["n_images"] == 4 and res["classes"] == ["cat", "dog"]


def test_the_heat_map_uses_the_windows_of_the_printed_probability():
    """Issue 18, item 14: the map was built top-left aligned while the probability was centred."""
    from verydeep.evaluation.core import dense_maps, dense_probs, match_channels, rescale, window_trim
    from verydeep.evaluation.predict import score_map

    torch.manual_seed(0)
    net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32).eval()
    meta = Meta(classes=["a", "b", "c"])
    img = Image.fromarray((torch.rand(64, 91, 3) * 255).byte().numpy())  # 91 = 32 + 32 + 27: r = 27
    x = match_channels(rescale(img, 64), 3)[None]
    m, offset = score_map(net, meta, img, 1, 64)
    assert offset == (0, 27 // 2)  # 64 = 32 + 32: nothing cut from the height
    seen = window_trim(x, 32, 32, "centre")
    with torch.inference_mode():
        assert torch.equal(m, dense_maps(net, seen, meta.prep, flip=True)[0, 1])
        p = dense_probs(net, x, meta.prep, flip=False)  # the printed number sees the same pixels
        q = dense_maps(net, seen, meta.prep)[0].mean((1, 2)).softmax(0)
    torch.testing.assert_close(p[0], q)
    assert score_map(net, meta, img, 1, 64, align="topleft")[1] == (0, 0)


def test_every_inference_precision_is_a_cli_choice():
    # the CLI lists the modes itself (it must not import torch for --help); they must not drift
    from verydeep.cli import build_parser
    from verydeep.numerics import PRECISIONS

    for cmd in (["predict", "-m", "m.safetensors", "x.jpg"], ["eval", "m.safetensors", "--data", "d"]):
        for name in PRECISIONS:
            assert build_parser().parse_args([*cmd, "--precision", name]).precision == name
        with pytest.raises(SystemExit):
            build_parser().parse_args([*cmd, "--precision", "fp16"])


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "ck.safetensors", "--data", "d", "--csv", ""],
        ["eval", "", "--data", "d"],
        ["predict", "-m", "ck.safetensors", "p.jpg", "--heatmap", " "],
        ["transfer", "tr.safetensors", "--json", ""],
        ["features", "ck.safetensors", "", "--out", "f.npz"],
        ["train", "--config", ""],
        ["convert", "w.pth", "o.safetensors", "--classes", ""],
        ["localize", "predict", "p.jpg", "--loc", "l", "--cls", "c", "--draw", ""],
        ["bench", "--save", ""],
        ["preresize", "", "dst", "--smallest-side", "64"],
        ["convert", "", "o.safetensors"],
        ["predict", "-m", "", "p.jpg"],
    ],
)
def test_an_empty_path_is_an_error_never_the_working_directory_or_no_output(argv, capsys):
    # `--json "$OUT"` with OUT unset used to write nothing and exit 0; an empty input path was "."
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "an empty path (an unset variable?)" in err[0], err


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "-m", "ck.safetensors", "p.jpg", "--heatmap", "{r}/map.jpg"],
        ["localize", "predict", "p.jpg", "--loc", "l", "--cls", "c", "--draw", "{r}/boxes.jpg"],
    ],
)
def test_png_outputs_must_be_named_png(argv, tmp_path, capsys):
    # PNG data used to be written into a .jpg file
    assert main([a.replace("{r}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "writes a PNG: give a path ending in .png" in err[0], err
    assert not list(tmp_path.iterdir())


def test_predict_with_no_readable_image_exits_2(tmp_path, capsys):
    # every file missing or broken is bad input (2); some skipped stays 1 (tests/test_image_limits.py)
    from verydeep.io.checkpoint import Meta, save_model
    from verydeep.models.vgg import VGG

    ck = tmp_path / "ck.safetensors"
    save_model(
        ck, VGG("A", num_classes=2, width_mult=0.0625, fc_width=16, crop_size=32), Meta(classes=["a", "b"])
    )
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["predict", "-m", str(ck), str(tmp_path / "missing.jpg"), str(tmp_path / "broken.jpg")]) == 2
    err = capsys.readouterr().err
    assert "missing.jpg" in err and "broken.jpg" in err and "Traceback" not in err


def test_a_net_named_twice_is_refused_as_an_ensemble_of_itself(setup, capsys, tmp_path):
    # the same file twice, a copy of it or a link to it used to be evaluated as "ensemble of 2"
    from verydeep.io.checkpoint import check_distinct
    from verydeep.localization.api import load_classifiers, load_locs

    net = setup / "net.safetensors"
    (tmp_path / "copy.safetensors").write_bytes(net.read_bytes())
    (tmp_path / "link.safetensors").symlink_to(net)
    data = str(setup / "data")
    for other, words in [(net, "is given twice"), (tmp_path / "copy.safetensors", "hold the same weights")]:
        assert main(["eval", str(net), str(other), "--data", data, "--workers", "0", "--quiet"]) == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith("verydeep eval: error: ") and words in line and "\n" not in line, line
    assert main(["predict", "-m", str(tmp_path / "link.safetensors"), "-m", str(net), f"{data}/a/0.png"]) == 2
    assert "hold the same weights" in capsys.readouterr().err
    with pytest.raises(ValueError, match="same weights"):
        load_classifiers([str(net), str(tmp_path / "copy.safetensors")])
    with pytest.raises(ValueError, match="given twice"):  # before the load that would find no box head
        load_locs([f"{net}@256", str(net)])
    torch.manual_seed(1)
    other = VGG("A", num_classes=2, width_mult=0.125, fc_width=16, crop_size=32)
    save_model(tmp_path / "other.safetensors", other, Meta(classes=["a", "b"]))
    check_distinct([net, tmp_path / "other.safetensors", tmp_path / "missing.safetensors"])  # all differ


def test_a_directory_given_as_a_checkpoint_says_so(setup, capsys):
    assert main(["eval", str(setup / "adir"), "--data", str(setup / "data")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"verydeep eval: error: {setup / 'adir'} is a directory, not a checkpoint file"
    )


def test_class_folders_outside_classes_from_name_that_list(setup, capsys, tmp_path):
    # the message used to blame "the model's classes" for a list read from --classes-from
    import numpy as np

    from verydeep.io.features import Descriptors, save_descriptors

    names = ["x", "y"]
    save_descriptors(
        tmp_path / "c.npz", Descriptors(np.eye(2, dtype=np.float32), np.array([0, 1]), ["0", "1"], names)
    )
    argv = ["features", str(setup / "net.safetensors"), str(setup / "data"), "--out", str(tmp_path / "f.npz")]
    assert main([*argv, "--classes-from", str(tmp_path / "c.npz")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.endswith("class folders ['a', 'b'] are not among the expected classes: x, y"), line
    assert not (tmp_path / "f.npz").exists()


def test_eval_split_is_a_sub_folder_of_an_image_folder(setup, capsys, tmp_path):
    # --split was read for VOC roots only: on train/ + val/ it evaluated 'train' and 'val' as classes
    for split, n in (("train", 1), ("val", 2)):
        for c in "ab":
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 40), (60 * i, 90, 30)).save(tmp_path / split / c / f"{i}.png")
    argv = ["eval", str(setup / "net.safetensors"), "--data", str(tmp_path), "--workers", "0", "--json"]
    for split, n in (("train", 2), ("val", 4)):
        assert main([*argv, "--split", split]) == 0
        assert json.loads(capsys.readouterr().out)["n_images"] == n
    assert main(argv) == 2  # the root itself: its sub-folders are splits, not classes
    assert (
        "holds split folders (train/, val/), not only classes: name one with --split"
        in capsys.readouterr().err
    )
    assert main(["eval", str(setup / "net.safetensors"), "--data", "fashion-mnist", "--split", "train"]) == 2
    assert "evaluated on its test split" in capsys.readouterr().err


def test_flags_of_the_chosen_methods_are_taken(setup, capsys, tmp_path):
    # the other side of the check above: each flag is accepted where its method runs
    base = ["eval", str(setup / "net.safetensors"), "--data", str(setup / "data"), "--workers", "0", "--json"]
    for extra in (
        ["--method", "multicrop", "--grid", "2"],
        ["--method", "dense+multicrop", "--average", "softmax", "--dense-align", "topleft", "--grid", "2"],
    ):
        assert main([*base, "--scales", "single", *extra]) == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["n_images"] == 4
    heat = tmp_path / "h.png"
    argv = [
        "predict",
        "-m",
        str(setup / "net.safetensors"),
        str(setup / "data/a/0.png"),
        "--method",
        "centre",
    ]
    assert main([*argv, "--dense-align", "topleft", "--heatmap", str(heat)]) == 0  # the heat map is dense
    assert heat.read_bytes()[:4] == b"\x89PNG"


def test_a_folder_given_as_a_file_says_so(setup, capsys, tmp_path):
    # each said "no such file" / "no such image" / "not found or too large" of a folder that exists
    folder = str(setup / "adir")
    assert main(["predict", "-m", str(setup / "net.safetensors"), folder]) == 2
    assert f"skipped {folder}: is a directory, not a file" in capsys.readouterr().err
    assert main(["localize", "predict", folder, "--loc", "l.safetensors", "--cls", "c.safetensors"]) == 2
    assert (
        capsys.readouterr().err.strip() == f"verydeep localize: error: {folder}: is a directory, not a file"
    )
    from verydeep.io.weights.convert import read_classes

    with pytest.raises(ValueError, match=f"classes file {folder}: is a directory, not a file"):
        read_classes(folder, 2)
    with open(tmp_path / "huge.txt", "wb") as fh:  # 17 MB, sparse: over the 16 MB limit
        fh.truncate(17 << 20)
    with pytest.raises(ValueError, match="is too large"):
        read_classes(tmp_path / "huge.txt", 2)


def test_an_ensemble_of_nets_with_other_classes_says_where_they_differ(setup, capsys, tmp_path):
    # it said "an ensemble needs nets with the same classes", naming neither the nets nor the classes
    torch.manual_seed(2)
    for name, classes in (("ba", ["b", "a"]), ("abc", ["a", "b", "c"])):
        net = VGG("A", num_classes=len(classes), width_mult=0.125, fc_width=16, crop_size=32)
        save_model(tmp_path / f"{name}.safetensors", net, Meta(classes=classes))
    img = str(setup / "data/a/0.png")
    for name, words in (
        ("ba", "class 0 is 'b' in net 2, 'a' in net 1"),
        ("abc", "net 2 has 3 classes, net 1 2"),
    ):
        assert (
            main(
                [
                    "predict",
                    "-m",
                    str(setup / "net.safetensors"),
                    "-m",
                    str(tmp_path / f"{name}.safetensors"),
                    img,
                ]
            )
            == 2
        )
        assert capsys.readouterr().err.strip().endswith(words)


def test_an_ensembles_heat_map_says_whose_map_it_is(setup, tmp_path, monkeypatch):
    # the title showed the ensemble's class and probability over the first net's map, unsaid
    import verydeep.io.plots as vp

    titles = []
    real = vp.heatmap_png
    monkeypatch.setattr(
        vp, "heatmap_png", lambda panels, crop: titles.extend(p[4] for p in panels) or real(panels, crop)
    )
    torch.manual_seed(5)
    other = VGG("A", num_classes=2, width_mult=0.125, fc_width=16, crop_size=32)
    save_model(tmp_path / "other.safetensors", other, Meta(classes=["a", "b"]))
    img, heat = str(setup / "data/a/0.png"), str(tmp_path / "h.png")
    nets = ["-m", str(setup / "net.safetensors"), "-m", str(tmp_path / "other.safetensors")]
    assert main(["predict", *nets, img, "--heatmap", heat]) == 0
    assert main(["predict", *nets[:2], img, "--heatmap", heat]) == 0
    assert titles[0].endswith(", map of net.safetensors") and "map of" not in titles[1]


def test_grey_on_a_one_channel_net_is_refused(tmp_path, capsys):
    # a 1-channel net is always fed grey: --grey was ignored, and recorded in the file all the same
    net = VGG("A", num_classes=2, in_channels=1, width_mult=0.125, fc_width=16, crop_size=32)
    prep = {"mean": [128.0], "std": [64.0], "pixel_range": 255.0, "bgr": False}
    save_model(tmp_path / "grey.safetensors", net, Meta(classes=["a", "b"], preprocess=prep))
    for c in "ab":
        (tmp_path / "data" / c).mkdir(parents=True)
        Image.new("RGB", (40, 40), (90, 100, 20)).save(tmp_path / "data" / c / "0.png")
    argv = [
        "features",
        str(tmp_path / "grey.safetensors"),
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "f.npz"),
    ]
    assert main([*argv, "--grey", "--workers", "0"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("--grey has no effect: this net takes one channel, so its input is grey anyway")
    )
    assert main([*argv, "--workers", "0"]) == 0 and (tmp_path / "f.npz").is_file()
