"""Stand-in for ``verydeep train`` (not yet merged): a compact Fashion-MNIST loop for docs/TRANSFER.md.

Net D, width_mult 0.25, fc_width 256, crop 32, 3 input channels (grey replicated), Glorot init,
S = 256 paper units (37 px), random crop + flip, SGD momentum 0.9, weight decay 5e-4, lr 0.01.
Writes ``<out>/random.safetensors`` (the initial weights: the floor) and ``<out>/fmnist.safetensors``
(after ``--seconds`` of training). Usage:

    PYTHONPATH=src python scripts/train_small_fmnist.py --out runs/transfer-fmnist --seconds 240
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from verydeep.config import pixels
from verydeep.data.fashion_mnist import CLASSES, load_fashion_mnist
from verydeep.data.preprocess import Preprocess
from verydeep.data.transforms import random_crop_params, scale_crop_flip
from verydeep.io.checkpoint import Meta, save_model
from verydeep.models.init import init_weights
from verydeep.models.vgg import VGG


def accuracy(net: VGG, prep: Preprocess, images: torch.Tensor, labels: torch.Tensor, s: int) -> float:
    net.eval()
    n = len(images)
    x = scale_crop_flip(images, 32, torch.full((n,), float(s)), torch.full((n, 2), 0.5), torch.zeros(n))
    with torch.no_grad():
        pred = torch.cat([net(prep(b.expand(-1, 3, -1, -1))).argmax(1) for b in x.split(500)])
    net.train()
    return (pred == labels).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/transfer-fmnist")
    ap.add_argument("--seconds", type=float, default=240)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, labels = load_fashion_mnist(split="train")
    test_x, test_y = load_fashion_mnist(split="test")
    mean = images.float().mean().item()
    prep = Preprocess.preset("paper", mean=(mean, mean, mean))
    net = VGG("D", num_classes=10, in_channels=3, width_mult=0.25, fc_width=256, crop_size=32)
    init_weights(net, "glorot")
    meta = Meta(preprocess=prep.to_dict(), classes=list(CLASSES), train_scale=[256], source="verydeep")
    save_model(f"{args.out}/random.safetensors", net, meta)
    s = pixels(256, 32)
    decay = [p for p in net.parameters() if p.dim() > 1]
    no_decay = [p for p in net.parameters() if p.dim() == 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0}],
        lr=0.01,
        momentum=0.9,
    )
    start, step = time.process_time(), 0
    net.train()
    while time.process_time() - start < args.seconds:
        idx = torch.randint(0, len(images), (args.batch,))
        scales, offsets, flips = random_crop_params(args.batch, (s, s), flip=True)
        x = scale_crop_flip(images[idx], 32, scales, offsets, flips).expand(-1, 3, -1, -1)
        loss = F.cross_entropy(net(prep(x)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.3f} cpu {time.process_time() - start:.0f}s", flush=True)
    acc = accuracy(net, prep, test_x[:2000], test_y[:2000], s)
    cpu = time.process_time() - start
    print(f"{step} steps x {args.batch}, CPU {cpu:.0f}s, centre-crop accuracy on 2000 test images {acc:.3f}")
    meta.config = {"steps": step, "batch": args.batch, "cpu_s": round(cpu), "test_acc_2000": acc}
    save_model(f"{args.out}/fmnist.safetensors", net, meta)


if __name__ == "__main__":
    main()
