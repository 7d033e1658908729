"""Device checks: dense and multi-crop evaluation, a training step, resume and bf16 autocast on
the accelerator, each against the CPU in fp32 NCHW. They run on CUDA where there is a GPU
(``scripts/gpu_check.sh`` runs them there); without one the "device" side takes the CPU's other
kernels (channels_last, Winograd), so CI still compares two code paths rather than a run with
itself. ``VERYDEEP_TEST_DEVICE`` picks the device."""

import os

import pytest
import torch
from safetensors.torch import load_file

from verydeep.config import RunConfig
from verydeep.evaluation import dense_probs, multicrop_probs
from verydeep.evaluation.core import Runtime
from verydeep.models.vgg import VGG
from verydeep.numerics import Numerics
from verydeep.train import fit

DEVICE = os.environ.get("VERYDEEP_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.cuda
TINY = dict(num_classes=5, width_mult=0.125, fc_width=32, crop_size=32)
RUN = [
    "model.arch=A", "model.width_mult=0.125", "model.fc_width=32", "model.crop_size=32", "model.dropout=0",
    "model.init=glorot", "data.subset=200", "data.flip=false", "data.colour_shift=0", "optim.batch_size=32",
    "train.precision=fp32", "train.eval_test=false", "data.val_fraction=0", "train.max_steps=4",
]  # fmt: skip


def _net() -> VGG:
    torch.manual_seed(0)
    return VGG("A", **TINY).eval()


def test_dense_and_multicrop_match_the_cpu():
    net, x = _net(), torch.randint(0, 256, (2, 3, 48, 61), dtype=torch.uint8)
    from verydeep.data.preprocess import Preprocess

    prep = Preprocess()
    with torch.inference_mode():
        cpu = dense_probs(net, x, prep), multicrop_probs(net, x, prep)
        rt = Runtime(DEVICE, Numerics(channels_last=True))
        dev_net = _net().to(DEVICE)
        dev = dense_probs(dev_net, x, prep, rt=rt).cpu(), multicrop_probs(dev_net, x, prep, rt=rt).cpu()
    for a, b in zip(cpu, dev, strict=True):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)  # fp32 is IEEE on the GPU too (numerics.py)


def test_bf16_autocast_stays_close_to_fp32():
    net, x = _net().to(DEVICE), torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    from verydeep.data.preprocess import Preprocess

    prep = Preprocess()
    with torch.inference_mode():
        fp32 = dense_probs(net, x, prep, rt=Runtime(DEVICE))
        bf16 = dense_probs(net, x, prep, rt=Runtime(DEVICE, Numerics("bf16")))
    assert bf16.dtype == torch.float32 and (bf16 - fp32).abs().max() < 0.02
    assert (bf16 - fp32).abs().max() > 0  # bf16 really ran: the numbers are rounded


@pytest.mark.skipif(DEVICE == "cpu", reason="TF32 tensor cores are a GPU's (compute capability 8.0+)")
def test_tf32_is_asked_for_and_differs_from_fp32():
    net, x = _net().to(DEVICE), torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    from verydeep.data.preprocess import Preprocess
    from verydeep.numerics import resolve

    prep = Preprocess()
    with torch.inference_mode():
        fp32 = dense_probs(net, x, prep, rt=Runtime(DEVICE, resolve("fp32", DEVICE)))
        tf32 = dense_probs(net, x, prep, rt=Runtime(DEVICE, resolve("tf32", DEVICE)))
    assert (tf32 - fp32).abs().max() < 0.02 and not torch.equal(tf32, fp32)


# the reference: fp32 NCHW direct convolutions on the CPU. Without a GPU the "device" run takes the
# CPU's other kernels (channels_last, Winograd), so the comparison is never a run with itself.
REFERENCE = ["train.device=cpu", "train.channels_last=false", "train.winograd=false"]
OTHER_KERNELS = [] if DEVICE != "cpu" else ["train.channels_last=true", "train.winograd=true"]


def test_training_steps_and_resume_on_the_device(fmnist_root, tmp_path):
    run = [*RUN, f"data.root={fmnist_root}"]  # VERYDEEP_FMNIST on a machine without the package
    base = [*run, f"train.device={DEVICE}", *OTHER_KERNELS]
    fit(RunConfig.from_sources(overrides=[*base, f"train.out_dir={tmp_path / 'a'}"]), progress=False)
    split = [*base, f"train.out_dir={tmp_path / 'b'}"]
    fit(RunConfig.from_sources(overrides=[*split, "train.max_steps=2"]), progress=False)
    fit(RunConfig.from_sources(overrides=split), progress=False)  # resumes at step 2
    cpu = [*run, *REFERENCE, f"train.out_dir={tmp_path / 'c'}"]
    fit(RunConfig.from_sources(overrides=cpu), progress=False)
    a, b, c = (load_file(tmp_path / r / "checkpoints" / "last.safetensors") for r in "abc")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)  # resumed == straight
        torch.testing.assert_close(a[k], c[k], atol=1e-3, rtol=1e-2)  # device == CPU, up to kernels
    assert any(not torch.equal(a[k], c[k]) for k in a)  # other kernels really ran


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_one_is_one_line(tmp_path, capsys):
    from verydeep.cli import main

    argv = ["train", "--config", "experiments/quickstart.toml", "--set", "train.device=cuda"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("train.device asks for CUDA but no CUDA device is available") and "\n" not in err
    assert not (tmp_path / "run").exists()
