"""verydeep preresize: sizes capped, small JPEGs copied untouched, bad files counted, resumable."""

import pytest
from PIL import Image

from verydeep.cli import main
from verydeep.data.images import load_image
from verydeep.io.preresize import preresize


def _tree(root):
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.new("RGB", (900, 600), (200, 10, 10)).save(root / "a" / "big.jpg")
    Image.new("RGB", (120, 100), (10, 200, 10)).save(root / "a" / "small.jpg")
    Image.new("P", (700, 500)).save(root / "b" / "pal.png")
    (root / "b" / "bad.jpg").write_bytes(b"not a jpeg at all")
    return root


def test_preresize_tree(tmp_path):
    src, dst = _tree(tmp_path / "src"), tmp_path / "dst"
    counts = preresize(src, dst, smallest_side=300)
    assert counts == {"resized": 2, "copied": 1, "exists": 0, "bad": 1}
    assert Image.open(dst / "a" / "big.jpg").size == (450, 300)  # isotropic: 900x600 -> 450x300
    assert (dst / "a" / "small.jpg").read_bytes() == (src / "a" / "small.jpg").read_bytes()
    assert load_image(dst / "b" / "pal.png.jpg").size == (420, 300)
    assert not (dst / "b" / "bad.jpg").exists()
    again = preresize(src, dst, smallest_side=300)
    assert again["exists"] == 3 and again["resized"] == 0


def test_preresize_real_photo_and_cli(tmp_path, shared_data, capsys):
    src = shared_data / "hymenoptera" / "val" / "ants"
    sub = tmp_path / "src" / "ants"
    sub.mkdir(parents=True)
    photo = max(src.iterdir(), key=lambda p: min(Image.open(p).size))
    (sub / photo.name).write_bytes(photo.read_bytes())
    assert (
        main(
            ["preresize", str(tmp_path / "src"), str(tmp_path / "out"), "--max-side", "200", "--workers", "2"]
        )
        == 0
    )
    out = capsys.readouterr()
    assert "resized 1" in out.out and "--max-side is deprecated, use --smallest-side" in out.err
    assert min(Image.open(tmp_path / "out" / "ants" / photo.name).size) == 200


def test_preresize_errors(tmp_path):
    with pytest.raises(NotADirectoryError):
        preresize(tmp_path / "nope", tmp_path / "out", 100)
    src = _tree(tmp_path / "src")
    with pytest.raises(ValueError, match="outside the source"):
        preresize(src, src / "inside", 100)
    with pytest.raises(SystemExit) as stop:
        main(["preresize", str(src), str(tmp_path / "o"), "--smallest-side", "0"])
    assert stop.value.code == 2 and not (tmp_path / "o").exists()
    assert main(["preresize", str(src), str(tmp_path / "o")]) == 2  # no S given


def test_an_empty_destination_or_a_source_inside_it_is_refused(tmp_path, capsys):
    # "" used to mean the working directory; SRC inside DST put the copies among the originals
    src = tmp_path / "top" / "src" / "cls"
    src.mkdir(parents=True)
    Image.new("RGB", (64, 48)).save(src / "a.jpg")
    with pytest.raises(ValueError, match="destination folder is empty"):
        preresize(src.parent, "", 32)
    with pytest.raises(ValueError, match="source must lie outside the destination"):
        preresize(src.parent, tmp_path / "top", 32)
    assert main(["preresize", str(src.parent), "", "--smallest-side", "32"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "verydeep preresize: error: the destination folder is empty: name a new folder"
    ]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.jpg"]


def test_a_rerun_with_other_settings_is_refused_and_changes_nothing(tmp_path, capsys):
    # a rerun used to keep every image of the first size and add the rest at the second: a mixed tree
    src, dst = _tree(tmp_path / "src"), tmp_path / "dst"
    preresize(src, dst, smallest_side=300)
    before = {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    (dst / "a" / "big.jpg").unlink()  # a half-done tree, as after an interrupted run
    del before[dst / "a" / "big.jpg"]
    for argv in (["--smallest-side", "200"], ["--smallest-side", "300", "--quality", "70"]):
        assert main(["preresize", str(src), str(dst), "--workers", "1", *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "was made with smallest_side 300, quality 90" in lines[0], lines
    with pytest.raises(ValueError, match="was made with"):
        preresize(src, dst, smallest_side=200)
    assert {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()} == before
    assert preresize(src, dst, smallest_side=300)["resized"] == 1  # the same settings resume


def test_a_tree_that_preresize_did_not_make_is_refused(tmp_path):
    src, dst = _tree(tmp_path / "src"), _tree(tmp_path / "dst")
    with pytest.raises(ValueError, match="did not record"):
        preresize(src, dst, smallest_side=300)
    (dst / ".preresize.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a preresize record"):
        preresize(src, dst, smallest_side=300)
    assert sorted(p.name for p in dst.rglob("*.jpg")) == ["bad.jpg", "big.jpg", "small.jpg"]
