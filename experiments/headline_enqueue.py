"""Enqueue hand-chosen points into the headline search (experiments/headline_search.py), read off
its validation results: the first generation showed the pruning learning rate to matter most
(the two trials with prune_lr > 1e-3 reached 99.08 and 99.12 % validation; no other reached 99 %),
but NSGA-II's crossovers drew few such points. Each enqueued point is run by the next free worker
like any trial (seed 0, validation only).

    python experiments/headline_enqueue.py
"""
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import headline_search as hs  # noqa: E402

POINTS = [
    dict(density_scale=0.58, step=0.45, alpha=0.3, prune_lr=1.9e-3, quant_lr=6e-5),
    dict(density_scale=0.65, step=0.55, alpha=0.0, prune_lr=1.9e-3, quant_lr=8e-5),
    dict(density_scale=0.72, step=0.6, alpha=0.0, prune_lr=1.9e-3, quant_lr=8e-5),
    dict(density_scale=0.5, step=0.5, alpha=0.3, prune_lr=2e-3, quant_lr=6e-5),
    # second batch, after the first of the above gave 98.96 % validation at 22,672 range bits
    dict(density_scale=0.62, step=0.45, alpha=0.3, prune_lr=1.9e-3, quant_lr=6e-5),
    dict(density_scale=0.58, step=0.45, alpha=0.0, prune_lr=2e-3, quant_lr=8e-5),
]

if __name__ == "__main__":
    study = hs.study(hs.STORAGE)
    for p in POINTS:
        study.enqueue_trial(p, skip_if_exists=True)
        print("enqueued", json.dumps(p))
