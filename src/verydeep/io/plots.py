"""PNG plots for people who would rather look than read.

Example:
    >>> import tempfile, os
    >>> from verydeep.io.plots import plot_curves
    >>> p = os.path.join(tempfile.mkdtemp(), "c.png")
    >>> plot_curves([{"epoch": 1, "train_loss": 1.0, "train_err": 0.5, "val_err": 0.4}], p)
    >>> os.path.getsize(p) > 1000
    True
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> None:
    """Training loss and train/held-out top-1 error per epoch, side by side."""
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    if all("val_loss" in r for r in history):
        ax1.plot(epochs, [r["val_loss"] for r in history], "s-", label="held-out loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax2.plot(epochs, [100 * r["train_err"] for r in history], "o-", label="train top-1 error")
    if all("val_err" in r for r in history):
        ax2.plot(epochs, [100 * r["val_err"] for r in history], "s-", label="held-out top-1 error")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("error (%)")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_study_curves(histories: dict[str, list[dict]], path: str | Path) -> None:
    """Training loss and held-out error per epoch of every run of a study, one line each.

    Runs starting from scratch or from net A are solid; fine-tuning stages (S=384, jittered)
    dashed, so the 20 lines stay apart.
    """
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(15, 6))
    colours = plt.get_cmap("tab20").colors
    for i, (name, rows) in enumerate(histories.items()):
        if not rows:
            continue
        style = "--" if name.endswith(("-384", "-jit")) else "-"
        kw = dict(ls=style, marker="o", ms=3, color=colours[i % len(colours)], label=name)
        epochs = [r["epoch"] for r in rows]
        if all("train_loss" in r for r in rows):
            ax_loss.plot(epochs, [r["train_loss"] for r in rows], **kw)
        if all("val_err" in r for r in rows):
            ax_err.plot(epochs, [100 * r["val_err"] for r in rows], **kw)
    ax_loss.set_ylabel("training loss (with dropout and augmentation)")
    ax_err.set_ylabel("held-out (validation) top-1 error (%)")
    for ax in (ax_loss, ax_err):
        ax.set_xlabel("epoch (of each run's own stage)")
        ax.grid(alpha=0.3)
    ax_err.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
