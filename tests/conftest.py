"""Shared fixtures: where the real data lives, and skips with a reason when it is absent."""

import os
import sys
from pathlib import Path

import pytest
import torch

# helpers beside the tests (voc_tree, image_corpus, _tiny_nets): --import-mode=importlib does not
# put this folder on sys.path
sys.path.insert(0, str(Path(__file__).parent))

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# the Debian package's folder; VERYDEEP_FMNIST points elsewhere (the GPU machine gets the four
# .gz files carried with the repository: scripts/gpu_check.sh)
FMNIST = Path(os.environ.get("VERYDEEP_FMNIST", "/usr/share/datasets/fashion-mnist"))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real photographs not found at {SHARED} (the ../shared folder beside the repo)")
    return SHARED


@pytest.fixture
def fmnist_root() -> Path:
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not found in {FMNIST}: apt-get install dataset-fashion-mnist")
    return FMNIST


@pytest.fixture
def one_thread():
    """One torch thread for a test, restored after it: on a shared machine whose other core is
    busy, two OpenMP threads stall each other (tiny nets ran 20-50x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# four critters-VOC photographs, two objects in one, one greyscale: a VOC tree small enough to
# train, tune and evaluate box nets on in seconds
MINI_VOC_IDS = ["kangaroo-00001", "kangaroo-00002", "raccoon-1", "raccoon-150"]


@pytest.fixture
def mini_voc(tmp_path, shared_data) -> Path:
    """A VOC tree of ``MINI_VOC_IDS`` (links into critters-voc), the same photographs in train and val."""
    critters, root = shared_data / "critters-voc", tmp_path / "mini-voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for i in MINI_VOC_IDS:
        (root / "Annotations" / f"{i}.xml").symlink_to(critters / "Annotations" / f"{i}.xml")
        (root / "JPEGImages" / f"{i}.jpg").symlink_to(critters / "JPEGImages" / f"{i}.jpg")
    for split in ("train", "val"):
        (root / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(MINI_VOC_IDS) + "\n")
    return root
