"""The localisation net of Appendix A: a VGG whose last FC layer regresses a box.

The net is the classification net with ``classifier[6]`` replaced by a Linear layer with 4
outputs (single-class regression, SCR: one box shared by all classes) or 4 x C outputs
(per-class regression, PCR: outputs ``4c .. 4c+3`` are class c's box). Everything else keeps
its trained weights and the torchvision layout, so ``dense_forward`` yields a box map.

Outputs are (centre x, centre y, width, height) of the box in the input crop, divided by the
crop size (so the crop is the unit square; values outside [0, 1] mean the object extends past
the crop). The loss is Euclidean, Caffe's ``EuclideanLoss``: ``sum ||pred - target||^2 / 2N``
over crops that see an object; with PCR only the ground-truth class's 4 outputs get a loss.
``train_localizer`` trains on classification's loop, ``engine.train_one_epoch``, with that loss
as its criterion (``box_criterion``) and classification's SGD (``optim``).

Example:
    >>> import torch
    >>> from verydeep.models.vgg import VGG
    >>> from verydeep.localization.net import make_loc_net, class_boxes
    >>> cls = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
    >>> loc = make_loc_net(cls, "pcr").eval()
    >>> out = loc(torch.zeros(2, 3, 32, 32))
    >>> out.shape, class_boxes(out, torch.tensor([0, 2]), "pcr").shape
    (torch.Size([2, 12]), torch.Size([2, 4]))
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..data.preprocess import Preprocess
from ..engine import NonFiniteLossError, StepState, train_one_epoch
from ..finetune import freeze
from ..models.vgg import VGG
from ..models.winograd import winograd_convs
from ..numerics import FP32, Numerics
from ..optim import param_groups, set_rate, sgd
from ..ranges import MAX_SCALE, MIN_SCALE, check, spec
from .data import ScaledSet, sample_crops

HEADS = ("scr", "pcr")
BOX_SIZES = ("linear", "log")
MIN_SIZE = 1e-3  # of the crop: the smallest size a log target stands for (log of 0 is -inf)


@dataclass
class LocTrainConfig:
    head: str = spec("pcr", choices=HEADS)  # scr (4 outputs) | pcr (4 x classes)
    finetune: str = spec("all", choices=("all", "fc"))  # all layers | fc (FC6-FC8 only, body frozen)
    # training S in paper units (pixels at crop 224); the paper used 256 and 384
    scale: int = spec(384, lo=MIN_SCALE, hi=MAX_SCALE)
    steps: int = spec(300, lo=1)
    batch_size: int = spec(32, lo=1, hi=4096)
    lr: float = spec(1e-3, lo=0, hi=10)  # the paper's; short runs on tiny nets may want more
    # fractions of ``steps`` after which the rate is divided by 10. The appendix gives the box
    # nets only their starting rate; Sect. 3.1 divides the classifier's three times on plateaus,
    # which needs a validation split the box nets do not have. () keeps the rate constant.
    lr_drops: tuple[float, ...] = ()
    momentum: float = spec(0.9, lo=0, lt=1)
    weight_decay: float = spec(5e-4, lo=0, hi=1)
    last_std: float = spec(0.01, gt=0, hi=10)  # the random last layer: N(0, std^2) weights, zero bias
    # which object a crop regresses: largest (visible area) | random
    target: str = spec("largest", choices=("largest", "random"))
    # how the net outputs a box's width and height (both divided by the crop size): linear, the
    # paper's 4-D (centre, width, height) vector; or log (R-CNN's parametrisation, not the
    # paper's), where an error costs the same for a small box as for a large one
    box_size: str = spec("linear", choices=BOX_SIZES)
    flip: bool = True
    seed: int = spec(0, lo=0, hi=2**32 - 1)

    def __post_init__(self) -> None:
        check(self, "localize")
        self.lr_drops = tuple(float(f) for f in self.lr_drops)
        if any(not 0 < f < 1 for f in self.lr_drops) or list(self.lr_drops) != sorted(set(self.lr_drops)):
            raise ValueError(
                f"lr_drops (--lr-drops) must be increasing fractions in (0, 1), got {list(self.lr_drops)}"
            )

    def lr_at(self, step: int) -> float:
        """The rate of optimiser step ``step`` (0-based): ``lr`` / 10 per drop already passed."""
        return self.lr * 0.1 ** sum(step >= f * self.steps for f in self.lr_drops)

    def to_dict(self) -> dict:
        return asdict(self)


def make_loc_net(cls_model: VGG, head: str, std: float = 0.01) -> VGG:
    """A copy of the classification net with a random box-regression last layer."""
    if head not in HEADS:
        raise ValueError(f"head must be scr or pcr, got {head!r}")
    net = copy.deepcopy(cls_model)
    outputs = 4 if head == "scr" else 4 * cls_model.num_classes
    old = net.classifier[6]
    new = nn.Linear(old.in_features, outputs).to(old.weight.device)
    nn.init.normal_(new.weight, 0.0, std)
    nn.init.zeros_(new.bias)
    net.classifier[6] = new
    net.num_classes = outputs
    net.build_kwargs = dict(net.build_kwargs, num_classes=outputs)
    return net


def class_boxes(out: torch.Tensor, labels: torch.Tensor, head: str) -> torch.Tensor:
    """The (N, 4) boxes of classes ``labels`` from net outputs (N, 4 or 4C, ...)."""
    if head == "scr":
        return out[:, :4]
    rows = out.view(out.shape[0], -1, 4, *out.shape[2:])
    return rows[torch.arange(out.shape[0]), labels]


def encode_boxes(t: torch.Tensor, box_size: str) -> torch.Tensor:
    """Targets (..., 4) of normalised (cx, cy, w, h) as the net is trained to output them."""
    if box_size == "linear":
        return t
    return torch.cat([t[..., :2], t[..., 2:].clamp_min(MIN_SIZE).log()], -1)


def decode_boxes(out: torch.Tensor, box_size: str, dim: int = -1) -> torch.Tensor:
    """Net outputs (4 along ``dim``) back to normalised (cx, cy, w, h); a regressed negative
    linear size means an empty box."""
    centre, size = out.split([2, 2], dim)
    size = size.clamp_min(0) if box_size == "linear" else size.exp()
    return torch.cat([centre, size], dim)


def box_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Euclidean loss ``sum ||pred - target||^2 / 2N`` over the valid rows (0 if none)."""
    if not bool(valid.any()):
        return pred.sum() * 0.0
    diff = pred[valid] - target[valid]
    return (diff**2).sum() / (2 * diff.shape[0])


def box_criterion(head: str) -> Callable[[torch.Tensor, dict], torch.Tensor]:
    """The box loss as ``engine.train_one_epoch``'s criterion: net outputs and the targets of
    ``crop_batches`` (labels, encoded boxes, valid) to ``box_loss`` of the labels' boxes."""

    def loss(out: torch.Tensor, t: dict) -> torch.Tensor:
        return box_loss(class_boxes(out, t["labels"], head), t["boxes"], t["valid"])

    return loss


def crop_batches(
    ds: ScaledSet, crop: int, cfg: LocTrainConfig, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, dict]]:
    """``cfg.steps`` batches of random crops of ``ds``, drawn from ``gen`` as they are asked for:
    (uint8 images, {"labels", "boxes" (encoded as the net outputs them), "valid"})."""
    for _ in range(cfg.steps):
        idx = torch.randint(len(ds), (cfg.batch_size,), generator=gen)
        b = sample_crops(ds, idx, crop, cfg.flip, cfg.target, gen)
        yield b.images, {"labels": b.labels, "boxes": encode_boxes(b.targets, cfg.box_size), "valid": b.valid}


def train_localizer(
    net: VGG,
    ds: ScaledSet,
    prep: Preprocess,
    cfg: LocTrainConfig,
    progress: Callable[[int, float], None] | None = None,
    numerics: Numerics = FP32,
) -> dict:
    """SGD on the box loss with random crops of ``ds``, on ``net``'s device, through
    ``engine.train_one_epoch``: a NaN/inf loss or gradient stops with ``NonFiniteLossError``,
    its update not applied. ``numerics``: the arithmetic (bf16 autocast, Winograd convolutions,
    channels_last). ``progress(step, loss)`` after every step. Returns the history: every step's
    loss and rate, and the CPU seconds. ``net`` is left in eval mode, every layer trainable."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = next(net.parameters()).device
    view = _training_view(net, numerics)
    # fine-tuning's freeze, on the net that trains: with fc the body's Parameters (shared with
    # ``net``) stop taking gradients, so param_groups leaves them out, and it runs as in evaluation
    train_mode = freeze(view, cfg.finetune, bn="train")
    opt = sgd(param_groups(net, cfg.weight_decay, decay_biases=False), cfg.lr, cfg.momentum, device)
    hist: dict = {"loss": [], "lr": []}
    before = [0.0, 0.0]  # the engine's sums (loss x crops, crops) after the previous step

    def set_lr(step: int) -> None:  # the rate of the coming step, recorded as SGD is given it
        if step < cfg.steps:
            set_rate(opt, cfg.lr_at(step))
            hist["lr"].append(opt.param_groups[0]["lr"])

    def on_step(state: StepState, _metrics: dict, _n: int) -> None:  # after every step (sync_every 1)
        sums = state.sums
        hist["loss"].append((sums.loss - before[0]) / max(sums.seen - before[1], 1.0))
        before[:] = sums.loss, sums.seen
        if progress:
            progress(state.global_step - 1, hist["loss"][-1])

    set_lr(0)
    t0 = time.process_time()
    try:
        train_one_epoch(
            view,
            crop_batches(ds, net.crop_size, cfg, gen),
            opt,
            prepare=prep,
            device=device,
            state=StepState(),
            criterion=box_criterion(cfg.head),
            errors=None,  # a box has no top-1 error
            numerics=numerics,
            on_nonfinite="stop",
            on_step=on_step,
            set_lr=set_lr,
            train_mode=train_mode,
        )
    except NonFiniteLossError as e:
        msg = f"non-finite box loss or gradient at step {e.step}; lower the rate (--lr, now {cfg.lr:g})"
        raise NonFiniteLossError(msg, e.step) from None
    finally:
        _release(net, numerics)
    return {**hist, "cpu_s": time.process_time() - t0}


def _release(net: VGG, numerics: Numerics) -> None:
    """The net as training found it, whatever stopped it: eval mode, NCHW, every layer trainable."""
    net.eval()
    if numerics.channels_last:
        net.to(memory_format=torch.contiguous_format)
    for p in net.parameters():
        p.requires_grad_(True)


def _training_view(net: VGG, numerics: Numerics) -> nn.Module:
    """``net`` in ``numerics``' form for training: channels_last in place, and with Winograd a
    copy whose convolutions share ``net``'s Parameter objects, so that its steps train ``net``."""
    if numerics.channels_last:
        net.to(memory_format=torch.channels_last)
    if not numerics.winograd:
        return net
    return winograd_convs(net, memo={id(t): t for t in [*net.parameters(), *net.buffers()]})
