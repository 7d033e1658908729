"""Shared fixtures: where the real data lives, and skips with a reason when it is absent."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real photographs not found at {SHARED} (the ../shared folder beside the repo)")
    return SHARED


@pytest.fixture
def fmnist_root() -> Path:
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    return FMNIST
