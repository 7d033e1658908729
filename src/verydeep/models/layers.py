"""Every layer of a VGG by the authors' Caffe names, and ``extract``: the outputs of named layers.

Names follow the authors' deploy files: ``conv<b>_<i>`` and ``relu<b>_<i>`` in block b, ``bn<b>_<i>``
in the ``_bn`` variants (between a conv and its ReLU, as torchvision's ``vgg16_bn`` has it),
``norm1`` for A-LRN's LRN, ``pool<b>``; then the classifier in its dense form (FC layers as
convolutions, so any input of at least the crop size has a map): ``fc6``, ``relu6``, ``fc7``,
``relu7``, ``fc8``. A name maps to the same module whatever the config, where a
``features[:16]`` index means relu3_3 in VGG-16 and conv3_4 in VGG-19.

``extract`` runs the net only as far as the deepest layer asked for. By default the weights are
frozen (read detached, so no gradient reaches them; batch norm uses its running statistics), and
the result stays differentiable with respect to the input: what a perceptual or style loss needs.
The net itself is left as it was (its mode, its ``requires_grad`` flags).

Example:
    >>> import torch
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.models.layers import extract, layer_names
    >>> net = VGG("D", num_classes=5, width_mult=0.125, fc_width=32, crop_size=32)
    >>> layer_names(net)[:5], layer_names(net)[-3:]
    (['conv1_1', 'relu1_1', 'conv1_2', 'relu1_2', 'pool1'], ['fc7', 'relu7', 'fc8'])
    >>> out = extract(net, torch.rand(1, 3, 64, 64), ["relu2_2", "relu3_3"])
    >>> {k: tuple(v.shape) for k, v in out.items()}
    {'relu2_2': (1, 16, 32, 32), 'relu3_3': (1, 32, 16, 16)}
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import LRN, VGG
from .winograd import WinogradConv2d

HEAD = ("fc6", "relu6", "fc7", "relu7", "fc8")
# a name of a conv-stage layer in some config (which ones a net has: ``feature_names``)
CONV_STAGE = re.compile(r"^(conv|relu|bn)[1-5]_[1-4]$|^norm1$|^pool[1-5]$")


def feature_names(model: VGG) -> list[str]:
    """The name of each module of ``model.features``, in order. In a Winograd copy (the fast
    convolutions of ``precision=winograd``) a conv may hold its ReLU, whose place keeps an
    ``nn.Identity``: that is still the ReLU's name."""
    if not isinstance(model.features, nn.Sequential):  # e.g. int8's body, one quantised module
        raise ValueError(f"named layers need the float net's layers (precision fp32, winograd or bf16), "
                         f"not {type(model.features).__name__}")  # fmt: skip
    names, block, i = [], 1, 0
    for m in model.features:
        if isinstance(m, nn.Conv2d | WinogradConv2d):
            i += 1
            names.append(f"conv{block}_{i}")
        elif isinstance(m, nn.BatchNorm2d):
            names.append(f"bn{block}_{i}")
        elif isinstance(m, nn.ReLU | nn.Identity):
            names.append(f"relu{block}_{i}")
        elif isinstance(m, LRN):
            names.append(f"norm{block}")
        elif isinstance(m, nn.MaxPool2d):
            names.append(f"pool{block}")
            block, i = block + 1, 0
        else:  # a module with no layer boundaries to name
            raise ValueError(f"named layers need the float net's layers, not {type(m).__name__}")
    return names


def layer_names(model: VGG) -> list[str]:
    """Every named layer of ``model``: its features, then the dense classifier."""
    return [*feature_names(model), *HEAD]


def check_layers(model: VGG, names: Sequence[str]) -> list[str]:
    known = layer_names(model)
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown layer(s) {unknown or 'none given'} for VGG {model.arch}; choose from "
                         f"{', '.join(known)}")  # fmt: skip
    return list(dict.fromkeys(names))


def _frozen(m: nn.Module, x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """One features module on ``x`` with its weights read detached (BN: running statistics)."""
    if isinstance(m, nn.BatchNorm2d):
        w, b = m.weight.detach(), m.bias.detach()
        return F.batch_norm(x, m.running_mean, m.running_var, w, b, False, 0.0, m.eps)
    params = {k: v.detach() for k, v in m.named_parameters(recurse=False)}
    return torch.func.functional_call(m, params, (x,)) if params else _free(m, x, inplace)


def _free(m: nn.Module, x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """The module as it is (weights trainable). A ReLU works in place only where its input is
    no output asked for (``inplace``), as torchvision's VGG does: it saves a pass over memory."""
    return F.relu(x, inplace=inplace) if isinstance(m, nn.ReLU) else m(x)


def extract(
    model: VGG, x: torch.Tensor, names: Sequence[str], *, train_weights: bool = False
) -> dict[str, torch.Tensor]:
    """{name: output} of the named layers for input ``x`` (already in the net's convention).

    Computes nothing past the deepest layer asked for. ``train_weights=False`` (default): the
    weights are frozen and batch norm uses running statistics; ``True``: gradients reach the
    weights and modules run in the net's own mode.
    """
    want = check_layers(model, names)
    order = layer_names(model)
    last = max(order.index(n) for n in want)
    modules = dict(zip(order, model.features, strict=False))
    fused = [n for n in want if isinstance(modules.get(n), WinogradConv2d) and modules[n].relu]
    if fused:  # its output is already after the ReLU
        raise ValueError(f"{fused[0]} holds its ReLU here (Winograd): ask for relu{fused[0][4:]} or use fp32")
    run = _free if train_weights else _frozen
    out: dict[str, torch.Tensor] = {}
    for i, (name, m) in enumerate(zip(order, model.features, strict=False)):
        # in place only on a tensor this call made (not the caller's input, not a kept output)
        x = run(m, x, i > 0 and order[i - 1] not in want)
        if name in want:
            out[name] = x
        if i == last:
            return {n: out[n] for n in want}
    weights = model.fc_as_conv()
    for j, name in enumerate(HEAD):
        if name.startswith("fc"):
            w, b = weights[int(name[2]) - 6]
            w, b = (w, b) if train_weights else (w.detach(), b.detach())
            x = F.conv2d(x, w, b)
        else:
            x = F.relu(x)
        if name in want:
            out[name] = x
        if len(order) - len(HEAD) + j == last:
            break
    return {n: out[n] for n in want}


def layer_info(model: VGG, size: int | tuple[int, int] | None = None) -> list[dict]:
    """[{"name", "channels", "stride", "shape"}] of every layer for a ``size`` input (default:
    the crop size); ``shape`` is (C, H, W) of one image."""
    h, w = (size, size) if isinstance(size, int) else size or (model.crop_size, model.crop_size)
    if min(h, w) < model.crop_size:
        raise ValueError(f"input {h}x{w} is smaller than the net's crop {model.crop_size}")
    names = layer_names(model)
    with torch.no_grad():
        maps = extract(model, torch.zeros(1, model.in_channels, h, w, device=_device(model)), names)
    out, stride = [], 1
    for n, v in maps.items():
        stride *= 2 if n.startswith("pool") else 1  # the dense head moves by pool5's 32 px
        out.append({"name": n, "channels": v.shape[1], "stride": stride, "shape": tuple(v.shape[1:])})
    return out


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
