"""Issue 12's campaign: the reproduction with the `reference` variant and the ablation, under the
protocol (PROTOCOL.md): training on the 55,000 images outside the validation split, the best epoch
chosen on validation, the test set evaluated once per reported model (the validation-selected
epoch and the final epoch), ≥ 3 seeds.

    python experiments/reference_campaign.py reproduction --worker 0 --workers 2
    python experiments/reference_campaign.py ablation --epochs 12 --worker 1 --workers 2

The runs are declared for :class:`metaq_utils.campaign.Campaign` (issue 22: the one runner), which
splits them between workers by index (run i goes to worker i mod W; one torch thread each, so two
workers use the two cores), claims each before starting it (``.claim`` with its pid and host; a claim
whose process is gone is taken over), skips a finished one (its ``result.json``, of the same identity;
results written before the runner are accepted as they are) and records a failure under
``runs/<campaign>/_state/failed/`` without stopping the others. Each run writes ``runs/<campaign>/<run>/``:
``last.pt`` (the resumable state after every epoch), ``best.pt`` (the validation-selected epoch),
``log.txt`` and, when finished, ``result.json``; an interrupted one resumes from ``last.pt`` and ends
with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from metaq_utils.nn.checkpoints import load_checkpoint
from metaq_utils.nn.data import load_mnist
from metaq_utils.nn.regularizer import METaQConfig, METaQRegularizer
from metaq_utils.nn.training import evaluate, make_model, train
from metaq_utils.pipeline import THESIS_TRAIN_CONFIG
from metaq_utils.campaign import Campaign, Run

REPO = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)

# the ablation (issue 12): one budget, only the entropy term changes
ABLATION = {
    "none": dict(variant="none"),
    "reference": dict(variant="reference"),
    "reference_head": dict(variant="reference", head_sign=True),
    "constant_best": dict(variant="constant_best"),
    "bundle_optimal": dict(variant="thesis", method="bundle"),
    "adjacent": dict(variant="adjacent"),
}


def runs_for(campaign: str, epochs: int) -> list[tuple[str, int, dict, int]]:
    """(run name, seed, METaQConfig kwargs, epochs) in a fixed order."""
    if campaign == "reproduction":
        return [(f"reference_seed{s}", s, dict(variant="reference"), epochs) for s in SEEDS]
    return [(f"{name}_seed{s}", s, kw, epochs) for s in SEEDS for name, kw in ABLATION.items()]


def run_one(out: Path, seed: int, metaq_kw: dict, epochs: int, data, command: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(THESIS_TRAIN_CONFIG, epochs=epochs, seed=seed)
    metaq = METaQConfig(**{"xi_seed": seed, **metaq_kw})
    model = make_model(cfg)
    reg = METaQRegularizer(model, metaq)
    log = open(out / "log.txt", "a", buffering=1)

    def report(epoch: int, row: dict) -> None:
        keys = ("val_accuracy", "entropy_grid_bits", "beta_mean", "beta_std", "beta_min", "beta_max",
                "share_above_grid", "share_below_grid", "epoch_seconds")
        log.write(f"epoch {epoch:3d} " + " ".join(f"{k}={row[k]:.6g}" for k in keys if k in row) + "\n")

    t0 = time.time()
    res = train(model, data, cfg, regularizer=reg, checkpoint_path=out / "last.pt", resume=True,
                best_path=out / "best.pt", epoch_callbacks=[report], progress=False)
    # the test set, once per reported model: the validation-selected epoch and the final epoch
    best = load_checkpoint(out / "best.pt").build_model()
    test_best = evaluate(best, data.test_x, data.test_y)
    test_final = evaluate(model, data.test_x, data.test_y)
    by_epoch = {r["epoch"]: r for r in res.history}
    result = {
        "command": command, "run": out.name, "seed": seed, "epochs": epochs,
        "train_config": cfg.to_dict(), "metaq": metaq.to_dict(), "selection": "validation",
        "split": data.split, "best_epoch": res.best_epoch,
        "best": {"epoch": res.best_epoch, "val_accuracy": by_epoch[res.best_epoch]["val_accuracy"],
                 "test_accuracy": test_best["accuracy"],
                 "entropy_grid_bits": by_epoch[res.best_epoch].get("entropy_grid_bits")},
        "final": {"epoch": res.final["epoch"], "val_accuracy": res.final["val_accuracy"],
                  "test_accuracy": test_final["accuracy"],
                  "entropy_grid_bits": res.final.get("entropy_grid_bits")},
        "history": res.history, "stopped_by": res.stopped_by, "wall_seconds_this_session": time.time() - t0,
    }
    log.write(f"done: best epoch {res.best_epoch} val {result['best']['val_accuracy']:.4f} "
              f"test {result['best']['test_accuracy']:.4f}; final test {result['final']['test_accuracy']:.4f}\n")
    log.close()
    return result            # written as result.json by the runner (metaq_utils.campaign)


def campaign(name: str, epochs: int | None, data, command: str, root: Path | None = None) -> Campaign:
    """The declared runs of ``name`` (``reproduction`` or ``ablation``); ``data()`` loads MNIST once, when a
    run starts."""
    epochs = epochs or (144 if name == "reproduction" else 12)
    root = root or REPO / "runs" / (name if name == "reproduction" else f"ablation_protocol/e{epochs}")
    runs = [Run(run, root / run, {"campaign": name, "seed": seed, "epochs": ep, "metaq": kw,
                                  "train": "THESIS_TRAIN_CONFIG"},
                lambda out, seed=seed, kw=kw, ep=ep: run_one(out, seed, kw, ep, data(), command))
            for run, seed, kw, ep in runs_for(name, epochs)]
    return Campaign(name, runs, root / "_state", command=command, legacy=_same_run)


def _same_run(run: Run, res: dict) -> str | None:
    """A result written before the runner is this run if its seed, epochs and METaQ settings agree."""
    ident = run.identity
    bad = [f"{k} {res.get(k)!r} (declared {v!r})" for k, v in (("seed", ident["seed"]), ("epochs", ident["epochs"]))
           if res.get(k) != v]
    bad += [f"metaq.{k} {res.get('metaq', {}).get(k)!r} (declared {v!r})" for k, v in ident["metaq"].items()
            if res.get("metaq", {}).get(k) != v]
    return "; ".join(bad) or None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("campaign", choices=["reproduction", "ablation"])
    p.add_argument("--epochs", type=int, default=None, help="default: 144 (reproduction), 12 (ablation)")
    p.add_argument("--worker", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--only", default=None, help="comma-separated run names")
    p.add_argument("--reverse", action="store_true",
                   help="take this worker's runs from the end (a second process on the same share)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    loaded = []

    def data():
        if not loaded:
            loaded.append(load_mnist(REPO / "data", verbose=False))
        return loaded[0]

    command = "python experiments/reference_campaign.py " + " ".join(argv if argv is not None else sys.argv[1:])
    c = campaign(a.campaign, a.epochs, data, command)
    names = [r.name for r in c.runs]
    mine = [n for i, n in enumerate(names) if i % a.workers == a.worker]
    if a.only:
        mine = [n for n in mine if n in a.only.split(",")]
    if a.reverse:                       # a second process on the same share takes its runs from the end
        c.runs = c.runs[::-1]
    c.run(f"w{a.worker}", only=mine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
