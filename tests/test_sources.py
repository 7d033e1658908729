"""One resolver for data sets (``data.sources``): every command that reads a split gets the same
rules and the same one-line errors, whichever entry point it goes through."""

import pytest
import torch
from PIL import Image
from voc_tree import make_voc

from verydeep.config import RunConfig
from verydeep.data.build import build_data
from verydeep.data.photos import labelled_images
from verydeep.data.sources import resolve_split
from verydeep.distributed import DistEnv
from verydeep.evaluation import open_data

BOX = (10, 10, 200, 150)
SMALL = (5, 5, 40, 40)


@pytest.fixture
def voc(tmp_path):
    root = make_voc(
        tmp_path / "voc",
        {"a": [("cat", 0, BOX), ("dog", 0, SMALL)], "b": [("dog", 0, BOX)], "c": [("cat", 1, BOX)]},
    )
    for i in "abc":
        Image.new("RGB", (300, 200)).save(root / "JPEGImages" / f"{i}.jpg")
    return root


@pytest.fixture
def folder(tmp_path):
    for split in ("train", "val"):
        for c in ("x", "y"):
            (tmp_path / "f" / split / c).mkdir(parents=True)
            Image.new("RGB", (40, 30)).save(tmp_path / "f" / split / c / "1.png")
    return tmp_path / "f"


# every entry point that names a split by path: eval's open_data, features' labelled_images,
# localisation's annotations, and the resolver itself
ENTRIES = {
    "eval": lambda root, split: open_data(str(root), split=split),
    "features": lambda root, split: labelled_images(root, split),
    "localize": lambda root, split: resolve_split("voc", root, split).annotations(),
    "resolver": lambda root, split: resolve_split("auto", root, split),
}


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_missing_split_file_is_the_same_error_everywhere(voc, entry):
    with pytest.raises(ValueError, match=r"^no split file .*ImageSets/Main/nope\.txt$"):
        ENTRIES[entry](voc, "nope")


@pytest.mark.parametrize("entry", ["features", "resolver"])
def test_a_voc_root_needs_its_split(voc, entry):
    with pytest.raises(ValueError, match=r"is a VOC root: name its split"):
        ENTRIES[entry](voc, "")


@pytest.mark.parametrize("entry", ["eval", "features", "resolver"])
def test_a_root_of_split_folders_is_refused_and_a_split_is_read(folder, entry):
    with pytest.raises(ValueError, match=r"holds split folders \(train/, val/\), not only classes"):
        ENTRIES[entry](folder, "")
    with pytest.raises(ValueError, match=r"has no split folder 'test'"):
        ENTRIES[entry](folder, "test")
    assert resolve_split("auto", folder, "val").samples()[1] == ["x", "y"]


def test_voc_labels_single_and_multi_agree(voc):
    """Single-label samples are each image's largest non-difficult object; the multi-label rows
    mark it present (1), a difficult-only class 0, an absent one -1."""
    s = resolve_split("auto", voc, "train")
    samples, classes = s.samples()
    paths, labels, same = s.labelled()
    assert s.kind == "voc" and classes == same == ["cat", "dog"]
    assert [(p.name, y) for p, y in samples] == [("a.jpg", 0), ("b.jpg", 1), ("c.jpg", 0)]
    assert [p.name for p in paths] == ["a.jpg", "b.jpg", "c.jpg"]
    assert labels.tolist() == [[1, 1], [-1, 1], [0, -1]]
    assert [len(a.objects) for a in s.annotations()] == [2, 1, 1]


def test_other_kinds_and_bad_names(tmp_path, folder):
    with pytest.raises(ValueError, match="is not a VOC dataset"):
        resolve_split("voc", folder, "train")
    with pytest.raises(NotADirectoryError, match="image folder not found"):
        resolve_split("auto", tmp_path / "absent", "")
    with pytest.raises(ValueError, match="Fashion-MNIST has the splits train and test"):
        resolve_split("fashion-mnist", "", "val")
    with pytest.raises(ValueError, match="data set must be one of"):
        resolve_split("coco", folder, "train")
    with pytest.raises(ValueError, match="boxes need one"):
        resolve_split("imagefolder", folder, "train").annotations()


def test_training_reads_the_same_splits(voc, folder):
    """``verydeep train`` resolves its splits with the same rules: a VOC tree's
    data.train_split / data.test_split, a folder's train/ and val/."""
    base = ["model.crop_size=32", "model.width_mult=0.125", "data.workers=0", "data.val_fraction=0"]
    cfg = RunConfig.from_sources(overrides=[*base, "data.dataset=imagefolder", f"data.root={folder}"])
    data, _ = build_data(cfg, DistEnv(), torch.device("cpu"))
    assert data.classes == ["x", "y"] and len(data.test) == 1
    (voc / "ImageSets/Main/val.txt").write_text("b\n")
    cfg = RunConfig.from_sources(
        overrides=[*base, "data.dataset=voc", f"data.root={voc}", "data.test_split=valx"]
    )
    with pytest.raises(ValueError, match=r"data\.test_split 'valx': no .*valx\.txt"):
        build_data(cfg, DistEnv(), torch.device("cpu"))
