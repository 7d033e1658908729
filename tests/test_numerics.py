"""One resolver for training's and inference's arithmetic (``verydeep.numerics``): the choices
``auto`` makes on each CPU class, the requests a device cannot run, and the TF32 policy (fp32
means IEEE fp32 on a GPU too; TF32 is asked for), set with one torch API and restored."""

import pytest
import torch

import verydeep.numerics as numerics
from verydeep.config import RunConfig
from verydeep.numerics import Numerics, fp32_math, resolve

CPU = torch.device("cpu")


@pytest.fixture(params=[False, True], ids=["avx2", "native-bf16"])
def bf16_cpu(request, monkeypatch) -> bool:
    monkeypatch.setattr(numerics.hardware, "native_bf16", lambda device: request.param)
    return request.param


def test_auto_is_the_same_choice_for_training_and_inference(bf16_cpu):
    want = "bf16" if bf16_cpu else "winograd"
    assert resolve("auto", CPU).mode == resolve("auto", CPU, training=True).mode == want
    assert resolve("auto", CPU, training=True).amp_dtype == (torch.bfloat16 if bf16_cpu else None)
    assert resolve("auto", CPU, channels_last="auto").channels_last is bf16_cpu


def test_asked_for_is_given_and_int8_is_inference_only(bf16_cpu):
    assert resolve("bf16", CPU).mode == resolve("bf16", CPU, training=True).mode == "bf16"
    assert resolve("fp32", CPU, winograd="false", training=True) == Numerics("fp32")
    assert resolve("int8", CPU).mode == "int8"
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, tf32, fp32"):
        resolve("int8", CPU, training=True)
    with pytest.raises(ValueError, match=r"winograd=true needs train\.precision=fp32, not bf16"):
        resolve("bf16", CPU, winograd="true", training=True)


def test_tf32_needs_an_ampere_gpu():
    with pytest.raises(ValueError, match=r"tf32 needs an NVIDIA GPU of compute capability 8\.0\+"):
        resolve("tf32", CPU)
    with pytest.raises(ValueError, match="tf32 needs an NVIDIA GPU"):
        resolve("tf32", CPU, training=True)
    assert RunConfig.from_sources(overrides=["train.precision=tf32"]).train.precision == "tf32"


def test_fp32_math_sets_both_switches_and_restores_them():
    knobs = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    before = [k.fp32_precision for k in knobs]
    with fp32_math("tf32"):
        assert [k.fp32_precision for k in knobs] == ["tf32", "tf32"]
        with fp32_math("ieee"):
            assert [k.fp32_precision for k in knobs] == ["ieee", "ieee"]
        assert [k.fp32_precision for k in knobs] == ["tf32", "tf32"]
    assert [k.fp32_precision for k in knobs] == before
    with pytest.raises(RuntimeError), fp32_math("tf32"):
        raise RuntimeError("a failing forward pass still restores the switches")
    assert [k.fp32_precision for k in knobs] == before


def test_the_context_is_ieee_on_a_gpu_unless_tf32_is_asked_for():
    """cuDNN's own default runs fp32 convolutions on TF32; verydeep's fp32 does not."""
    seen = []

    def probe(mode: Numerics, device: str) -> None:
        with mode.context(device):
            seen.append((torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision))

    probe(Numerics("fp32"), "cuda")
    probe(Numerics("tf32"), "cuda")
    probe(Numerics("winograd"), "cpu")  # the CPU's switches are left as they are
    outside = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    assert seen == [("ieee", "ieee"), ("tf32", "tf32"), outside]


def test_bf16_context_autocasts_on_the_cpu():
    with Numerics("bf16").context(CPU):
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert y.dtype == torch.bfloat16
    with Numerics("fp32").context(CPU):
        assert torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4)).dtype == torch.float32
