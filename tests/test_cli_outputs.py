"""Where outputs go: regular files and new paths are replaced atomically, a symlink to a file is
written through, anything else (device, FIFO, directory, link loop) is refused before any work;
a full or read-only file system is one line naming the path, with nothing half-written."""

import errno
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from verydeep.cli import main
from verydeep.io import files
from verydeep.io.files import atomic_write, output_target

TINY = [
    "model.arch=A", "model.width_mult=0.125", "model.fc_width=16", "model.crop_size=32",
    "data.val_fraction=0", "data.workers=0", "optim.batch_size=4", "train.max_steps=1",
    "train.precision=fp32", "train.device=cpu", "train.eval_test=false",
]  # fmt: skip


def last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [ln for ln in err.splitlines() if ln.strip()][-1]


def test_a_symlink_to_a_file_is_written_through(tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    atomic_write(link, b"new")
    assert link.is_symlink() and target.read_text() == "new"
    dangling = tmp_path / "to-new.csv"
    dangling.symlink_to(tmp_path / "not-yet.csv")
    atomic_write(dangling, b"x")  # a link to a new path: the file is made where it points
    assert dangling.is_symlink() and (tmp_path / "not-yet.csv").read_bytes() == b"x"


def _special_files(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "dir").mkdir()
    to_fifo = tmp_path / "to-fifo.png"
    to_fifo.symlink_to(fifo)
    loop = tmp_path / "loop.png"
    loop.symlink_to(tmp_path / "loop2.png")
    (tmp_path / "loop2.png").symlink_to(loop)
    out = {"FIFO": fifo, "directory": tmp_path / "dir", "link's target": to_fifo, "cannot follow": loop}
    if os.geteuid() == 0:  # a character device like /dev/full, made in tmp (never the real one)
        os.mknod(tmp_path / "full", stat.S_IFCHR | 0o600, os.makedev(1, 7))
        out["character device"] = tmp_path / "full"
    return out


def test_anything_but_a_regular_file_is_refused_and_left_alone(tmp_path):
    for what, path in _special_files(tmp_path).items():
        before = os.lstat(path)
        with pytest.raises(ValueError, match=what):
            atomic_write(path, b"png")
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino), what
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "-m", "absent.safetensors", "absent.jpg", "--heatmap", "{out}"],
        ["eval", "absent.safetensors", "--data", "absent-dir", "--csv", "{out}"],
        ["features", "absent.safetensors", "absent-dir", "--out", "{out}"],
        ["export", "absent.safetensors", "{out}"],
    ],
)
def test_output_paths_are_checked_before_any_input_is_read(tmp_path, capsys, argv):
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    code = main([a.replace("{out}", str(fifo)) for a in argv])
    line = last_line(capsys)
    # the output's error, not the (also missing) inputs': nothing was loaded first
    assert code == 2 and "is a FIFO, not a regular file" in line and "absent" not in line, line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.fixture
def unwritable(tmp_path):
    """A real folder this process may not write in: /proc/1 for root (who passes any permission
    bits), else a folder made read-only."""
    if os.geteuid() == 0:
        yield Path("/proc/1")
        return
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "-m", "absent.safetensors", "absent.jpg", "--heatmap", "{dir}/h.png"],
        ["eval", "absent.safetensors", "--data", "absent-dir", "--csv", "{dir}/e.csv"],
        ["features", "absent.safetensors", "absent-dir", "--out", "{dir}/f.npz"],
        ["export", "absent.safetensors", "{dir}/n.onnx"],
        ["style", "absent.jpg", "absent.png", "-m", "absent.safetensors", "--out", "{dir}/s.png"],
        ["eval", "absent.safetensors", "--data", "absent-dir", "--csv", "{dir}/missing/parent/e.csv"],
    ],
)
def test_an_unwritable_output_folder_fails_before_any_work(capsys, unwritable, argv):
    """Issue 42, item 5: eval --csv, features --out and export computed everything, then failed
    naming a hidden .tmp file; now the user's path is refused before any input is read."""
    code = main([a.replace("{dir}", str(unwritable)) for a in argv])
    line = last_line(capsys)
    out = next(a for a in argv if "{dir}" in a).replace("{dir}", str(unwritable))
    assert code == 2 and f"{out}: cannot write in {unwritable}" in line and "absent" not in line, line
    assert ".tmp" not in line


def test_a_failed_replace_names_the_users_path_not_the_temporary_file(tmp_path):
    target = tmp_path / "out.onnx"
    target.mkdir()  # appeared after the check: the final rename fails
    (target / "keep").write_text("")
    with pytest.raises(OSError) as e, files.replacing(target) as tmp:
        tmp.write_bytes(b"x")
    assert e.value.filename == str(target) and ".tmp" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]  # no temporary file left


@pytest.mark.parametrize(("code", "cause"), [(errno.ENOSPC, "No space left"), (errno.EROFS, "Read-only")])
def test_a_full_or_read_only_disk_is_one_line(tmp_path, capsys, monkeypatch, code, cause):
    root = tmp_path / "pets"
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 40), (60 * i, 80, 120)).save(root / c / f"{i}.png")
    run = tmp_path / "run"

    def full(src, dst):
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(files.os, "replace", full)
    sets = [*TINY, "data.dataset=imagefolder", f"data.root={root}", f"train.out_dir={run}"]
    assert main(["train", "--no-progress", *[a for s in sets for a in ("--set", s)]]) == 2
    line = last_line(capsys)
    assert line.startswith("verydeep train: error: ") and cause in line and str(run) in line, line
    assert not [p for p in run.rglob("*") if p.is_file()]  # nothing half-written


def test_output_target_names_the_new_path_or_the_links_target(tmp_path):
    assert output_target(tmp_path / "new.png") == tmp_path / "new.png"
    (tmp_path / "f").write_text("")
    (tmp_path / "l").symlink_to(tmp_path / "f")
    assert output_target(tmp_path / "l") == tmp_path / "f"
    with pytest.raises(ValueError, match="is not a directory"):
        output_target(tmp_path / "f" / "x.png")


@pytest.mark.parametrize("kind", ["resized", "copied"])
def test_a_disk_that_fills_during_a_preresize_write_leaves_no_partial_file(
    tmp_path, capsys, monkeypatch, kind
):
    """The temporary file of a write that fails half-way is removed (it used to be left behind
    as ``.<name>.tmp``), and the error is one line."""
    from verydeep.io import preresize

    src = tmp_path / "src" / "cats"
    src.mkdir(parents=True)
    Image.new("RGB", (80 if kind == "resized" else 30, 60), (60, 80, 120)).save(src / "0.jpg")

    def half_then_full(*args, **kwargs):
        Path(args[1] if kind == "copied" else args[0]).write_bytes(b"\xff\xd8 half")
        raise OSError(28, os.strerror(28))

    if kind == "copied":
        monkeypatch.setattr(preresize.shutil, "copyfile", half_then_full)
    else:
        monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: half_then_full(fp))
    dst = tmp_path / "dst"
    assert (
        main(["preresize", str(tmp_path / "src"), str(dst), "--smallest-side", "32", "--workers", "1"]) == 2
    )
    line = last_line(capsys)
    assert line.startswith("verydeep preresize: error: ") and "No space" in line, line
    assert [p.name for p in dst.rglob("*") if p.is_file()] == [".preresize.json"]  # the settings only
