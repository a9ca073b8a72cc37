"""Figures the notebooks share (matplotlib only)."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt

from .nn.ptq import SweepPoint

__all__ = ["plot_training_history", "plot_cq_sweep", "plot_metric_curves"]


def plot_training_history(history: Sequence[dict[str, Any]], title: str = "", reference: dict | None = None):
    """Accuracy and entropy of the weights quantized to the training grid, per epoch.

    The accuracy is the validation accuracy (``val_accuracy``, the protocol's rows); rows of a
    test-selected or older run (``test_accuracy`` only) are drawn as test accuracy, and say so."""
    epochs = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6))
    key = "val_accuracy" if history and "val_accuracy" in history[0] else "test_accuracy"
    label = "validation accuracy (%)" if key == "val_accuracy" else "test accuracy (%) [test-selected run]"
    a1.plot(epochs, [100 * r[key] for r in history], marker=".")
    a1.set_xlabel("epoch"); a1.set_ylabel(label); a1.grid(alpha=0.3)
    if "entropy_grid_bits" in history[0]:
        a2.plot(epochs, [r["entropy_grid_bits"] for r in history], marker=".", label="ours (training grid)")
    if reference:
        a1.axhline(100 * reference["accuracy"], color="gray", ls="--", label="thesis, epoch 144")
        a2.axhline(reference["entropy_bits"], color="gray", ls="--", label="thesis, epoch 144")
        a1.legend()
    a2.set_xlabel("epoch"); a2.set_ylabel("entropy (bits)"); a2.grid(alpha=0.3); a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_cq_sweep(points: Sequence[SweepPoint], selected: SweepPoint | None = None, thesis: Sequence[tuple] = ()):
    """Accuracy (on the split the sweep was scored on) and size (entropy, and the range-coded file
    if measured) against C_Q."""
    cq = [p.C_Q for p in points]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6))
    on = points[0].evaluated_on if points else "validation"
    a1.plot(cq, [100 * p.accuracy for p in points], marker=".", lw=0.8)
    a1.set_xscale("log"); a1.set_xlabel("C_Q"); a1.set_ylabel(f"{on} accuracy (%)"); a1.grid(alpha=0.3)
    a2.plot(cq, [p.entropy_bits for p in points], marker=".", lw=0.8, label="zero-order entropy")
    if points and points[0].file_bits is not None:
        a2.plot(cq, [p.file_bits for p in points], lw=0.8, label="range-coded file")
    if thesis:
        a1.scatter([t[0] for t in thesis], [100 * t[1] for t in thesis], color="gray", marker="x", label="thesis Table 7")
        a2.scatter([t[0] for t in thesis], [t[2] for t in thesis], color="gray", marker="x", label="thesis Table 7")
        a1.legend()
    if selected is not None:
        a1.axvline(selected.C_Q, color="red", ls=":", lw=1)
        a2.axvline(selected.C_Q, color="red", ls=":", lw=1, label=f"selected C_Q = {selected.C_Q}")
    a2.set_xscale("log"); a2.set_xlabel("C_Q"); a2.set_ylabel("bits"); a2.grid(alpha=0.3); a2.legend()
    fig.tight_layout()
    return fig


def plot_metric_curves(histories: dict[str, list[Sequence[dict[str, Any]]]], metric: str, *, ylabel: str | None = None,
                       ax=None, logy: bool = False):
    """One colour per label, one line per run (e.g. per seed), ``metric`` against the epoch."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, (label, runs) in enumerate(histories.items()):
        colour = f"C{i % 10}"
        for k, hist in enumerate(runs):
            ax.plot([r["epoch"] for r in hist], [r[metric] for r in hist], color=colour, lw=1.2, alpha=0.8,
                    label=label if k == 0 else None)
    ax.set_xlabel("epoch"); ax.set_ylabel(ylabel or metric); ax.grid(alpha=0.3); ax.legend(fontsize=8)
    if logy:
        ax.set_yscale("log")
    return ax
