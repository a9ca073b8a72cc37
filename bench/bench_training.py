"""Training-speed benchmark: one LeNet-5 epoch (batch 64, full MNIST, one thread) plain, with the
batched augmentation, and with the METaQ regularizer (C = 6 and C = 256).

Each configuration is timed ``--repeats`` times, interleaved, and the minimum is reported
(the machine is shared; the minimum is the least disturbed measurement). Ratios are against the
plain epoch measured in the same run. Results go to ``results/bench_training.json`` with the
command that produced them.

    python bench/bench_training.py [--repeats 2] [--skip-metaq]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from metaq_utils.data import load_mnist  # noqa: E402
from metaq_utils.training import TrainConfig, make_model, train  # noqa: E402


def epoch_seconds(data, augment: bool, regularizer_factory=None) -> float:
    cfg = TrainConfig(epochs=1, augment=augment, seed=0)
    model = make_model(cfg)
    reg = regularizer_factory(model) if regularizer_factory else None
    t0 = time.perf_counter()
    res = train(model, data, cfg, regularizer=reg, progress=False)
    total = time.perf_counter() - t0
    return res.final["epoch_seconds"], total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-metaq", action="store_true", help="time only plain and augmented epochs")
    ap.add_argument("--out", default=str(REPO / "results" / "bench_training.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_mnist(REPO / "data", verbose=False)

    configs = {"plain": (False, None), "augmented": (True, None)}
    if not args.skip_metaq:
        try:
            from metaq_utils.regularizer import METaQConfig, METaQRegularizer
        except ImportError:
            print("metaq_utils.regularizer not available: timing plain and augmented epochs only")
        else:
            for C in (6, 256):
                configs[f"metaq_C{C}"] = (False, lambda m, C=C: METaQRegularizer(m, METaQConfig(C=C)))
    times: dict[str, list[float]] = {k: [] for k in configs}
    for rep in range(args.repeats):
        for name, (augment, factory) in configs.items():
            train_s, total_s = epoch_seconds(data, augment, factory)
            times[name].append(train_s)
            print(f"repeat {rep + 1}: {name:12s} {train_s:7.2f} s (training part of the epoch)", flush=True)
    best = {k: min(v) for k, v in times.items()}
    plain = best["plain"]
    out = {
        "command": "python bench/bench_training.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread",
        "what": "seconds for the training part of one LeNet-5 epoch (60,000 images, batch 64), min over repeats",
        "plain_epoch_s": plain,
        "augmented_epoch_s": best["augmented"],
        "augmented_over_plain": best["augmented"] / plain,
        "augmentation_target": "<= 1.5",
        "all_times_s": times,
    }
    metaq = {int(k.split("_C")[1]): v for k, v in best.items() if k.startswith("metaq_C")}
    if metaq:
        out["metaq_epoch_s"] = metaq
        out["metaq_over_plain"] = {C: s / plain for C, s in metaq.items()}
        out["metaq_target"] = "<= 1.15"
    print(f"\nplain {plain:.2f} s, augmented {best['augmented']:.2f} s: ratio {best['augmented'] / plain:.3f} (target <= 1.5)")
    for C, s in metaq.items():
        print(f"METaQ C={C}: {s:.2f} s: ratio {s / plain:.3f} (target <= 1.15)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
