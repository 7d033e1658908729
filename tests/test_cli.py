"""The command line: info tables, config printing, one-line errors."""

import json

import pytest

from verydeep.cli import main


def test_info_json_regenerates_table2(capsys):
    assert main(["info", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["config"]: r for r in out["table2"]}
    assert rows["D"]["params"] == 138_357_544 and rows["E"]["params"] == 143_667_240
    assert set(rows) >= {"A", "A-LRN", "B", "C", "D", "E", "A_bn", "B_bn", "D_bn", "E_bn"}
    assert any("conv1-512" in line for line in out["table1"])


def test_info_table(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "Table 1" in out and "Table 2" in out and "138,357,544" in out


def test_print_config_and_bad_override(capsys):
    assert main(["train", "--print-config", "json", "--set", "model.arch=vgg19_bn"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["arch"] == "vgg19_bn"
    assert main(["train", "--set", "model.arch=Z"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("verydeep train: error: unknown VGG config") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.subset=-10", "data.subset must be in [0, inf)"),
        ("train.epochs=-1", "train.epochs must be in [1, "),
        ("train.max_steps=-5", "train.max_steps must be in [0, inf)"),
        ("optim.lr_factor=-1", "optim.lr_factor must be in (0, 1)"),
        ("optim.patience=-1", "optim.patience must be in [1, 1,000]"),
        ("optim.lr=1e300", "optim.lr must be in [0, 1,000]"),
        ("data.test_scale=-1", "data.test_scale must be in [0, "),
        ("train.checkpoint_every=-1", "train.checkpoint_every must be in [0, inf)"),
        ("train.out_dir=", "train.out_dir must be a folder (not empty)"),
        ("train.device=tpu", "train.device must be a string matching auto|cpu|cuda"),
        ("data.scale=[100]", "data.scale must be in [224, "),
        (
            "data.test_scale=100",
            "data.test_scale 100 (paper units, 100 px at crop 224) is smaller than the crop",
        ),
        ("model.dropout=1", "model.dropout must be in [0, 1)"),
        ("optim.micro_batch=512", "optim.micro_batch 512 exceeds optim.batch_size 256"),
    ],
)
def test_every_field_has_a_declared_range(capsys, override, needle):
    assert main(["train", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_print_config_lists_every_key_with_its_range_and_loads_back(capsys, tmp_path):
    import dataclasses
    import tomllib

    from verydeep.config import RunConfig

    assert main(["train", "--print-config", "--set", "model.arch=E", "--set", "data.scale=[256,512]"]) == 0
    text = capsys.readouterr().out
    n_keys = sum(len(dataclasses.fields(getattr(RunConfig(), s.name))) for s in dataclasses.fields(RunConfig))
    lines = [ln for ln in text.splitlines() if " = " in ln]
    assert len(lines) == n_keys and all("  # " in ln for ln in lines)
    assert (
        "crop_size = 224  # [32, 4,096]" in text
        and 'init = "normal"  # one of normal | glorot | kaiming' in text
    )
    (tmp_path / "c.toml").write_text(text)
    back = RunConfig.from_sources(tmp_path / "c.toml")  # lr and schedule as the run resolves them
    want = ["model.arch=E", "data.scale=[256,512]", "optim.lr=0.01", "optim.schedule=plateau"]
    assert back.to_dict() == RunConfig.from_sources(overrides=want).to_dict() and "lr = 0.01  #" in text
    assert tomllib.loads(text)["data"]["scale"] == [256, 512]
