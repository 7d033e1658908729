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
