"""PNG figures for people who would rather look than read: training curves, precision-recall
curves, class score maps over photographs, localisation boxes, stylised images. Each returns
PNG bytes or an image (the caller writes it) or writes one file atomically.

Example:
    >>> import tempfile, os
    >>> from verydeep.io.plots import draw_guesses, plot_curves
    >>> p = os.path.join(tempfile.mkdtemp(), "c.png")
    >>> plot_curves([{"epoch": 1, "train_loss": 1.0, "train_err": 0.5, "val_err": 0.4, "lr": 0.01}], p)
    >>> os.path.getsize(p) > 1000
    True
    >>> from collections import namedtuple
    >>> from PIL import Image
    >>> Guess = namedtuple("Guess", "label box score")
    >>> out = draw_guesses(Image.new("RGB", (64, 48)), [Guess(0, (4, 4, 40, 40), 0.9)], ["cat"])
    >>> out.size, out.getpixel((4, 20)) != (0, 0, 0)
    ((64, 48), True)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont


def pr_curve_png(name: str, precision: list[float], recall: list[float], ap: float, ap_mode: str) -> bytes:
    """PNG of one class's precision-recall curve on the test set (Appendix B's VOC metric)."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.step([0.0, *recall], [1.0, *precision], where="post", color="tab:blue")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    ax.set_title(f"{name}: AP {100 * ap:.1f}% ({ap_mode})", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> None:
    """Training loss, train/held-out top-1 error and the learning rate per epoch, side by side
    (the rate on a log axis, so each of the schedule's divisions by 10 is one equal step)."""
    epochs = [int(r["epoch"]) for r in history]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    if all("val_loss" in r for r in history):
        ax1.plot(epochs, [r["val_loss"] for r in history], "s-", label="held-out loss")
    ax1.set_ylabel("cross-entropy")
    ax2.plot(epochs, [100 * r["train_err"] for r in history], "o-", label="train top-1 error")
    if all("val_err" in r for r in history):
        ax2.plot(epochs, [100 * r["val_err"] for r in history], "s-", label="held-out top-1 error")
    ax2.set_ylabel("error (%)")
    lrs = [(e, r["lr"]) for e, r in zip(epochs, history, strict=True) if r.get("lr", 0) > 0]
    if lrs:  # a cosine schedule ends at 0, which a log axis cannot show
        ax3.step(*zip(*lrs, strict=True), where="post", color="grey", label="learning rate")
        ax3.set_yscale("log")
    ax3.set_ylabel("learning rate for the next epoch")
    for ax in (ax1, ax2, ax3):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a cosine run ending at 0 may leave no rate to draw
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_study_curves(histories: dict[str, list[dict]], path: str | Path, columns: int = 5) -> None:
    """Small multiples: one panel per run of a study, with its training and held-out top-1 error
    (left axis, shared by all panels) and its learning rate (right axis, log scale, one range
    for all panels, grey steps: the rate logged after epoch e is drawn over epoch e + 1, which
    trains at it), so each plateau drop of the paper's schedule shows where it happened."""
    fig = study_curves_figure(histories, columns)
    if fig is not None:
        fig.savefig(path, dpi=90)
        plt.close(fig)


def study_curves_figure(histories: dict[str, list[dict]], columns: int = 5) -> Figure | None:
    """The figure of ``plot_study_curves`` (None without any logged epoch)."""
    runs = [(n, rows) for n, rows in histories.items() if rows]
    if not runs:
        return None
    rates = [r["lr"] for _, rows in runs for r in rows if r.get("lr", 0) > 0]
    # one rate range for every panel, so that 1e-2 sits at the same height in each of them
    lr_range = (min(rates) / 2, max(rates) * 2) if rates else None
    nrows = -(-len(runs) // columns)
    fig, axes = plt.subplots(nrows, columns, figsize=(3.2 * columns, 2.6 * nrows), squeeze=False, sharey=True)
    for ax, (name, rows) in zip(axes.flat, runs, strict=False):
        epochs = [int(r["epoch"]) for r in rows]
        if all("train_err" in r for r in rows):
            ax.plot(epochs, [100 * r["train_err"] for r in rows], ".-", ms=3, color="tab:blue", label="train")
        if all("val_err" in r for r in rows):
            ax.plot(epochs, [100 * r["val_err"] for r in rows], ".-", ms=3, color="tab:red", label="held-out")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        lrs = [(e, r["lr"]) for e, r in zip(epochs, rows, strict=True) if r.get("lr", 0) > 0]
        if lrs:  # a cosine schedule's last rate is 0, which a log axis cannot show
            lr = ax.twinx()
            lr.step(*zip(*lrs, strict=True), where="post", color="grey", lw=1, ls="--")
            lr.set_yscale("log")
            lr.set_ylim(*lr_range)
            # no minor log ticks: unlabelled, and 40% of the figure's drawing time
            lr.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            lr.tick_params(labelsize=7, colors="grey")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # whole epochs
    for ax in list(axes.flat)[len(runs) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("top-1 error (%)")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle(
        "training (blue) and held-out (red) top-1 error per epoch; "
        "learning rate: grey dashed, log scale (right)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def heatmap_png(panels: Sequence[tuple[Image.Image, int, torch.Tensor, str]], crop: int) -> bytes:
    """PNG: per image, the photo and the photo under its class score map (jet, 50% alpha).

    ``panels``: (original image, test scale Q it was rescaled to, (h, w) map, (top, left) offset
    of window (0, 0), title), as ``score_map`` gives them. Map cell (i, j) is the window of
    ``crop`` pixels at (top + 32 i, left + 32 j) of the rescaled image (five 2x2 pools: stride
    32), drawn as a 32 px square around the window's centre, mapped back onto the photo.
    """
    fig, axes = plt.subplots(len(panels), 2, figsize=(9, 4 * len(panels)), squeeze=False)
    for (img, q, m, (top, left), title), (a0, a1) in zip(panels, axes, strict=True):
        f = min(img.size) / q  # photo pixels per rescaled pixel
        h, w = m.shape
        y0, x0 = top + crop / 2 - 16, left + crop / 2 - 16
        extent = (f * x0, f * (x0 + 32 * w), f * (y0 + 32 * h), f * y0)
        a0.imshow(img)
        a0.set_title(title, fontsize=9)
        a1.imshow(img)
        im = a1.imshow(m.numpy(), cmap="jet", alpha=0.5, extent=extent, interpolation="bilinear")
        a1.set_xlim(0, img.width)
        a1.set_ylim(img.height, 0)
        a1.set_title("class score map (dense, flip-averaged)", fontsize=9)
        fig.colorbar(im, ax=a1, fraction=0.04, label="score (logit)")
        for a in (a0, a1):
            a.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


COLOURS = [(255, 60, 60), (60, 200, 255), (255, 210, 0), (120, 255, 120), (255, 120, 255)]


def draw_guesses(img: Image.Image, guesses: Sequence, classes: list[str], k: int = 1) -> Image.Image:
    """The first ``k`` localisation guesses (each with ``label``, ``box`` (x0, y0, x1, y1) and
    ``score``: ``localization.protocol.Guess``) as boxes labelled "rank. class score" on a copy
    of ``img``, best drawn last (on top)."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 150))
    font = ImageFont.load_default(size=max(10, round(min(out.size) / 25)))
    for rank in reversed(range(min(k, len(guesses)))):
        g = guesses[rank]
        colour = COLOURS[rank % len(COLOURS)]
        x0, y0, x1, y1 = g.box
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour, width=width)
        text = f"{rank + 1}. {classes[g.label]} {g.score:.2f}"
        left, top, right, bottom = draw.textbbox((x0 + width, y0 + width), text, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=colour)
        draw.text((x0 + width, y0 + width), text, fill=(0, 0, 0), font=font)
    return out


def image_png(x: torch.Tensor) -> bytes:
    """(1, 3, H, W) in [0, 1] -> PNG bytes."""
    buf = io.BytesIO()
    arr = x[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()
