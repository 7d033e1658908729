"""The command line: info tables, config printing, one-line errors."""

import json

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
    assert main(["train", "--print-config", "--set", "model.arch=vgg19_bn"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["arch"] == "vgg19_bn"
    assert main(["train", "--set", "model.arch=Z"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("verydeep train: error: unknown VGG config") and err.count("\n") == 1
