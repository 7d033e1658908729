"""Keras import: Keras 3's own ``keras.applications.VGG16/VGG19`` (torch backend) is the oracle.

Random-weight Keras models are saved as ``.weights.h5`` (Keras 3 layout) and as a legacy
whole-model ``.h5``; after ``convert`` our net must give Keras' pre-softmax outputs on the same
images, Keras preprocessing (``preprocess_input``, Caffe style) against the checkpoint's own.
A 64x64 input keeps FC6 at 2x2x512, so the (H, W, C) -> (C, H, W) reordering is exercised.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported
keras = pytest.importorskip("keras")

from verydeep.data.preprocess import Preprocess  # noqa: E402
from verydeep.io.checkpoint import load_model  # noqa: E402
from verydeep.io.weights.convert import convert, load_weights  # noqa: E402
from verydeep.io.weights.keras import keras_weights  # noqa: E402

SIZE, CLASSES = 64, 7
# Keras 3.15 on numpy 2 warns about __array__(copy=...) on every weight access
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _keras_vgg(name: str, seed: int):
    keras.utils.set_random_seed(seed)
    app = getattr(keras.applications, name)
    model = app(weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES, classifier_activation=None)
    for layer in model.layers:  # non-zero biases, so a lost or misplaced bias shows
        if layer.weights:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.random.default_rng(seed).normal(0, 0.05, bias.shape)])
    return model


def _keras_logits(model, name: str, images: np.ndarray) -> np.ndarray:
    module = keras.applications.vgg16 if name == "VGG16" else keras.applications.vgg19
    x = module.preprocess_input(images.astype("float32").copy())  # NHWC RGB -> BGR minus mean
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


def _images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3)).astype(np.uint8)


def _close(ours: torch.Tensor, want: np.ndarray) -> None:
    # float32 sums in a different order: 1e-4 relative to the logits' scale
    scale = max(1.0, float(np.abs(want).max()))
    torch.testing.assert_close(ours, torch.from_numpy(want), rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize(
    ("name", "arch", "fmt"),
    [
        ("VGG16", "D", "weights.h5"),
        ("VGG19", "E", "h5"),
        pytest.param("VGG16", "D", "keras", marks=pytest.mark.slow),
        pytest.param("VGG16", "D", "h5", marks=pytest.mark.slow),
        pytest.param("VGG19", "E", "weights.h5", marks=pytest.mark.slow),
    ],
)
def test_keras_logits(tmp_path, name, arch, fmt):
    model = _keras_vgg(name, seed=1)
    path = tmp_path / f"net.{fmt}"
    model.save_weights(path) if fmt == "weights.h5" else model.save(path)
    convert(path, tmp_path / "net.safetensors")
    ours, meta = load_model(tmp_path / "net.safetensors")
    ours.eval()
    assert ours.arch == arch and ours.crop_size == SIZE and ours.num_classes == CLASSES
    assert meta.source == "keras" and meta.prep == Preprocess.preset("caffe")
    images = _images()
    with torch.no_grad():
        got = ours(meta.prep(torch.from_numpy(images).permute(0, 3, 1, 2)))
    _close(got, _keras_logits(model, name, images))


def test_keras_rgb_and_errors(tmp_path):
    model = _keras_vgg("VGG16", seed=2)
    path = tmp_path / "vgg16.weights.h5"
    model.save_weights(path)
    ours, meta = load_weights(path, rgb=True)
    assert not meta.prep.bgr and meta.prep.mean == (123.68, 116.779, 103.939)
    images = _images()
    with torch.no_grad():
        got = ours(meta.prep(torch.from_numpy(images).permute(0, 3, 1, 2)))
    _close(got, _keras_logits(model, "VGG16", images))
    # the Keras 2 layout (layers at the root, ':0' names), written here from the same weights
    with h5py.File(tmp_path / "keras2.h5", "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            g = f.create_group(layer.name)
            names = [f"{layer.name}/{v}:0" for v in ("kernel", "bias")] if layer.weights else []
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, value in zip(names, layer.get_weights(), strict=True):
                g.create_dataset(n, data=value)
    keras2, _ = load_weights(tmp_path / "keras2.h5", rgb=True)
    for (k, a), b in zip(ours.state_dict().items(), keras2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # a truncated HDF5 file, and a headless (include_top=False) model
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.h5"):
        load_weights(tmp_path / "cut.h5")
    keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3)).save_weights(
        tmp_path / "notop.weights.h5"
    )
    with pytest.raises(ValueError, match="fc6, fc7, fc8"):
        load_weights(tmp_path / "notop.weights.h5")


def test_a_flipped_byte_in_a_keras_archive_fails_its_crc(tmp_path):
    """A .keras file is a zip whose records carry CRC-32s: one flipped byte in the weights is
    refused in one line (issue 42, item 3), where HDF5 alone has no checksum to catch it."""
    import zipfile

    _keras_vgg("VGG16", seed=3).save_weights(tmp_path / "w.weights.h5")
    with zipfile.ZipFile(tmp_path / "net.keras", "w", zipfile.ZIP_STORED) as z:
        z.write(tmp_path / "w.weights.h5", "model.weights.h5")
    load_weights(tmp_path / "net.keras")  # the archive as written reads
    data = bytearray((tmp_path / "net.keras").read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the one stored record
    (tmp_path / "flip.keras").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"flip\.keras.*Bad CRC-32"):
        load_weights(tmp_path / "flip.keras")


def test_keras_oversized_dataset_rejected(tmp_path):
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"fc1"]
        g = f.create_group("fc1")
        g.attrs["weight_names"] = [b"fc1/kernel:0", b"fc1/bias:0"]
        # declared 40 GB, stored sparsely (never written), so the file itself stays tiny
        g.create_dataset("fc1/kernel:0", shape=(100_000, 100_000), dtype="f4")
        g.create_dataset("fc1/bias:0", shape=(4,), dtype="f4")
    with pytest.raises(ValueError, match="more than the file"):
        load_weights(path)


def test_fc6_column_order():
    """Keras flattens pool5 as (h, w, c); we flatten (c, h, w). Checked entry by entry."""
    k, c, out = 2, 3, 4
    kernel = np.zeros((k * k * c, out), np.float32)  # Keras Dense kernel: (in, out)
    for h in range(k):
        for w in range(k):
            for ch in range(c):
                kernel[(h * k + w) * c + ch] = [1000 * o + 100 * ch + 10 * h + w for o in range(out)]
    conv = np.zeros((3, 3, 2, c), np.float32)  # block5 conv with c outputs
    layers = {"block1_conv1": [conv, np.zeros(c, np.float32)], "fc1": [kernel, np.zeros(out, np.float32)]}
    w = keras_weights(layers)["fc6"][0]
    for o in range(out):
        for ch in range(c):
            for h in range(k):
                for x in range(k):
                    assert w[o, (ch * k + h) * k + x] == 1000 * o + 100 * ch + 10 * h + x
