"""Figures of the analysis notebooks (matplotlib, imported when a figure is drawn)."""

from __future__ import annotations

import pandas as pd

__all__ = ["plot_convergence"]


def plot_convergence(runs: pd.DataFrame, title: str = ""):
    """φ_w(ξ_k) (symlog) and the best-so-far gap to the optimum (log) against k, one row per start."""
    import matplotlib.pyplot as plt

    starts = list(dict.fromkeys(runs["start"]))
    fig, axes = plt.subplots(len(starts), 2, figsize=(12, 3.4 * len(starts)), squeeze=False)
    for row, start in zip(axes, starts):
        part = runs[runs.start == start]
        for k, (label, g) in enumerate(part.groupby("method", sort=False)):
            row[0].plot(g["iteration"], g["value"], color=f"C{k}", lw=0.9, label=label)
            row[1].plot(g["iteration"], g["rel_gap"], color=f"C{k}", lw=1.2, label=label)
        row[0].set_yscale("symlog", linthresh=1e3, linscale=0.5)
        lo_v, hi_v = float(part["value"].min()), float(part["value"].max())
        cand = (-1e15, -1e12, -1e9, -1e6, -1e3, 0.0, 1e3, 1e6, 1e9, 1e12, 1e15)
        below = max([t for t in cand if t <= lo_v], default=cand[0])
        above = min([t for t in cand if t >= hi_v], default=cand[-1])
        row[0].set_yticks([t for t in cand if below <= t <= above])
        row[0].set_ylabel(r"$\varphi_w(\xi_k)$"); row[0].set_title(f"{title} — start {start}", fontsize=10)
        row[1].set_yscale("log"); row[1].set_ylabel("best-so-far relative gap")
        row[1].set_title(f"gap to the true optimum — start {start}", fontsize=10)
        for ax in row:
            ax.set_xscale("log"); ax.set_xlabel("iteration k (oracle evaluations)"); ax.grid(alpha=0.3, which="both")
        row[1].legend(fontsize=8)
    fig.tight_layout()
    return fig
