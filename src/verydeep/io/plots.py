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
    """Held-out error per epoch of every run of a study, one line each."""
    fig, ax = plt.subplots(figsize=(10, 6))
    for name, rows in histories.items():
        if rows and all("val_err" in r for r in rows):
            ax.plot([r["epoch"] for r in rows], [100 * r["val_err"] for r in rows], "o-", ms=3, label=name)
    ax.set_xlabel("epoch (of each run's own stage)")
    ax.set_ylabel("held-out top-1 error (%)")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
