"""The model set-ups the bench compares: torchvision's default against verydeep's fast modes.

All variants share one set of weights (He-initialised VGG, torchvision-identical keys), so speed
and precision are compared on the same function. verydeep's fast inference mode casts the
*weights* to bf16 once (autocast would re-cast all 138 M parameters on every call) and keeps
activations in channels_last, the layout oneDNN/cuDNN convolutions run natively; training keeps
fp32 master weights under bf16 autocast, with the fused SGD step.

Example:
    >>> import torch
    >>> from verydeep.bench.nets import build_pair, fast_inference
    >>> tv, vd = build_pair("A", num_classes=5, width_mult=0.125, fc_width=32, crop_size=32)
    >>> x = torch.randn(2, 3, 32, 32)
    >>> fast = fast_inference(vd, torch.device("cpu"), torch.bfloat16)
    >>> with torch.inference_mode():
    ...     (fast(x).float() - tv.eval()(x)).abs().max().item() < 1.0
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torchvision
from torch import nn

from ..data.preprocess import Preprocess
from ..models.init import init_weights
from ..models.vgg import VGG

TV_NAMES = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}
PREP = Preprocess.preset("paper", mean=(123.68, 116.78, 103.94))  # the ILSVRC mean pixel, every part


def build_pair(arch: str = "D", seed: int = 0, **kwargs) -> tuple[nn.Module, VGG]:
    """(torchvision model, verydeep ``VGG``) with identical He-initialised weights.

    He init keeps activations at a stable scale through 16 layers, so logits are not near-tied
    (torchvision's default init is also He for convs); with the paper's N(0, 0.01) they would be.
    """
    torch.manual_seed(seed)
    vd = VGG(arch, **kwargs)
    init_weights(vd, "kaiming")
    full = kwargs.get("width_mult", 1.0) == 1.0 and kwargs.get("fc_width", 4096) == 4096
    if full and kwargs.get("crop_size", 224) == 224 and vd.letter in TV_NAMES:
        tv = getattr(torchvision.models, TV_NAMES[vd.letter])(num_classes=vd.num_classes)
    else:  # tiny nets for --quick: same module layout, so the same state_dict loads
        tv = VGG(arch, **kwargs)
    tv.load_state_dict(vd.state_dict())
    return tv, vd


def fast_inference(
    model: nn.Module,
    device: torch.device,
    dtype: torch.dtype = torch.bfloat16,
    compile: bool = False,
    dense: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A copy of ``model`` for inference: weights in ``dtype``, channels_last, optionally compiled.

    The returned callable takes an fp32 NCHW batch (as data pipelines produce) and runs under
    ``torch.inference_mode``; logits come back in ``dtype``. ``dense``: call ``dense_forward``
    (class score maps of whole images) instead of the FC form.
    """
    net = copy.deepcopy(model).eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)
    if dense:
        net.forward = net.dense_forward  # the instance attribute wins over the class method
    if compile:
        import torch._inductor.config as inductor_config

        # freezing folds weights into constants: oneDNN weight prepacking and conv+ReLU fusion
        inductor_config.freezing = True
        net = torch.compile(net)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(x.to(device=device, dtype=dtype, memory_format=torch.channels_last))

    return run


def int8_inference(model: VGG, calibration: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``--precision int8``'s net (``models/int8.py``, calibrated on ``calibration``), channels_last."""
    from ..models.int8 import quantize_int8

    net = quantize_int8(copy.deepcopy(model).cpu(), calibration)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(x.contiguous(memory_format=torch.channels_last))

    return run


class _Nnpack(nn.Module):
    """A 3x3 conv through NNPACK (Winograd F(6x6, 3x3) where it picks it): a candidate the bench
    measures, not a mode of verydeep (it lost to oneDNN on both CPU classes: experiments/bench_notes.md)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return torch._nnpack_spatial_convolution(x.contiguous(), c.weight, c.bias, c.padding, c.stride)


def nnpack_inference(model: VGG) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """fp32 with every conv through NNPACK, or None where this torch has no NNPACK."""
    if not torch._nnpack_available():  # the call also initialises NNPACK: ops fail without it
        return None
    net = copy.deepcopy(model).cpu().eval()
    net.features = nn.Sequential(*[_Nnpack(m) if isinstance(m, nn.Conv2d) else m for m in net.features])

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(x)

    return run


def eager_inference(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The baseline: fp32, NCHW, ``torch.no_grad`` (what a torchvision user writes)."""
    net = copy.deepcopy(model).eval().to(device)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(x.to(device))

    return run


def train_step(
    model: nn.Module,
    device: torch.device,
    batch: tuple[torch.Tensor, torch.Tensor],
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    engine: bool = False,
) -> Callable[[], torch.Tensor]:
    """One SGD step (momentum 0.9, weight decay 5e-4, the paper's) on a fixed batch, as a call.

    ``engine=False``: what a torchvision user writes (torch's default SGD, every parameter
    decayed). ``engine=True``: what ``verydeep train`` runs, through the same functions: its
    parameter groups (no decay on biases), fused SGD and ``engine.train_one_epoch``.
    """
    from ..build import param_groups
    from ..engine import StepState, train_one_epoch
    from ..numerics import Numerics

    mf = torch.channels_last if channels_last else torch.contiguous_format
    net = copy.deepcopy(model).train().to(device=device, memory_format=mf)
    x, y = batch[0].to(device=device, memory_format=mf), batch[1].to(device)
    if not engine:
        opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
        loss_fn = nn.CrossEntropyLoss()

        def step() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            return loss.detach()

    else:
        fused = device.type in ("cpu", "cuda")
        opt = torch.optim.SGD(param_groups(net, 5e-4, decay_biases=False), lr=1e-4, momentum=0.9, fused=fused)
        state = StepState()

        def step() -> torch.Tensor:
            numerics = Numerics("bf16" if amp_dtype else "fp32", channels_last)
            kw = dict(prepare=lambda t: t, device=device, state=state, numerics=numerics, sync_every=20)
            return torch.tensor(train_one_epoch(net, [(x, y)], opt, **kw)["loss"])

    step.net, step.opt = net, opt  # type: ignore[attr-defined]  # for tests and profiles
    return step
