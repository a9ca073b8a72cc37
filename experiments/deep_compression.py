"""Deep Compression baseline (issue 6): the accuracy–file-size frontier on LeNet-5 and LeNet-300-100.

For each network: train a dense model once (saved, reused by every sweep point), then for each
pruning quality q run prune → retrain for ``--rounds`` rounds (the pruned model is saved and reused
by every bit setting), then for each bit setting share (k-means) → fine-tune → encode into our
file format, decode the file and evaluate it. Each sweep point writes
``runs/deep_compression/<run>/result.json`` and ``model.mtq`` (the file whose size is reported)
and is appended to ``results/frontier.csv`` (method ``deep-compression``).

The default sweep (the one in the repository), about 15 minutes on the 2-core machine:

    nice -n 10 .venv/bin/python experiments/deep_compression.py > runs/deep_compression/log.txt 2>&1

and its variants with 2× and 4× the retraining per pruning round on LeNet-5 (runs named ``*_r4``,
``*_r8``), about 7 and 6 minutes:

    nice -n 10 .venv/bin/python experiments/deep_compression.py --networks lenet5 --qualities 1.6 2.2 \
        --retrain-epochs 4 --tag _r4 > runs/deep_compression/log_r4.txt 2>&1
    nice -n 10 .venv/bin/python experiments/deep_compression.py --networks lenet5 --qualities 2.2 \
        --retrain-epochs 8 --tag _r8 > runs/deep_compression/log_r8.txt 2>&1

Finished points (a result.json with the same configuration) are skipped, so the command resumes
after an interruption; ``--force`` recomputes them. No model selection is done on the test set:
every stage ends after its last epoch.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from metaq_utils.baselines.deep_compression import DeepCompression, DeepCompressionConfig, masks_from_zeros
from metaq_utils.coding.fileformat import encode_compressed
from metaq_utils.frontier import append_points
from metaq_utils.nn.checkpoints import REPO_ROOT, CheckpointError, atomic_write_bytes, load_checkpoint, save_checkpoint
from metaq_utils.nn.data import load_mnist
from metaq_utils.nn.training import TrainConfig, evaluate, make_model, train

METHOD = "deep-compression"

# The sweep: pruning qualities × bit settings (conv bits, fc bits) per network.
SWEEPS = {
    "lenet5": {"qualities": (1.0, 1.6, 2.2), "bits": ((8, 5), (5, 4), (4, 3)),
               # conv1 (150 weights) is pruned at half the quality, as the paper prunes LeNet-5's
               # first layer far less (66 % kept) than the others (8-19 %)
               "layer_quality_scale": {"conv1.weight": 0.5}},
    "lenet300100": {"qualities": (1.0, 1.6, 2.2, 2.8), "bits": ((8, 6), (8, 4), (8, 3)),
                    "layer_quality_scale": {}},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def dense_model(arch: str, data, args, out: Path):
    """Train (or reload) the dense network shared by every sweep point."""
    cfg = TrainConfig(arch=arch, epochs=args.dense_epochs, batch_size=64, optimizer="adam", lr=1e-3,
                      weight_decay=args.weight_decay, augment=False, seed=args.seed, lr_schedule="cosine")
    path = out / "_dense" / f"{arch}.pt"
    try:
        ck = load_checkpoint(path, expected_arch=arch)
        same_split = (ck.config.get("split") or {}).get("val_indices_sha256") == data.split.get("val_indices_sha256")
        if TrainConfig.from_dict(ck.config.get("train", {})) == cfg and same_split:
            model = ck.build_model()
            log(f"{arch}: dense model reloaded from {path.relative_to(REPO_ROOT)} "
                f"(test accuracy {100 * ck.metrics['test_accuracy']:.2f} %)")
            return model, ck.metrics["test_accuracy"]
        log(f"{arch}: {path.name} was trained with another configuration or data split; retraining")
    except CheckpointError:
        pass
    log(f"{arch}: training the dense model, {cfg.epochs} epochs")
    model = make_model(cfg)
    result = train(model, data, cfg, progress=False)       # per-epoch validation; the final epoch is kept
    for row in result.history:
        log(f"  epoch {row['epoch']}: loss {row['train_loss']:.4f}  val {100 * row['val_accuracy']:.2f} %  "
            f"({row['epoch_seconds']:.1f} s)")
    test_acc = evaluate(model, data.test_x, data.test_y)["accuracy"]   # the dense model's test accuracy, once
    save_checkpoint(path, model, arch, config={"train": cfg.to_dict(), "split": data.split, "selection": "validation"},
                    metrics={**result.final, "test_accuracy": test_acc})
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(result.history, indent=1).encode())
    return model, test_acc


def pruned_model(dc: DeepCompression, dense, arch: str, out: Path, q: float, tag: str = ""):
    """Prune and retrain (or reload) at quality q; the bit settings only matter afterwards."""
    prune_cfg = {k: v for k, v in dc.config.to_dict().items()
                 if k in ("quality", "layer_quality", "rounds", "quality_schedule", "retrain_epochs",
                          "retrain_lr", "weight_decay", "batch_size", "augment", "seed")}
    path = out / "_pruned" / f"{arch}_q{q:g}{tag}.pt"
    try:
        ck = load_checkpoint(path, expected_arch=arch)
        same_split = (ck.config.get("split") or {}).get("val_indices_sha256") == dc.data.split.get("val_indices_sha256")
        if ck.config.get("prune") == json.loads(json.dumps(prune_cfg)) and same_split:
            log(f"{arch} q={q:g}: pruned model reloaded from {path.relative_to(REPO_ROOT)}")
            model = ck.build_model()
            return model, masks_from_zeros(model), ck.config["history"]
    except CheckpointError:
        pass
    t0 = time.perf_counter()
    model, masks, history = dc.prune_and_retrain(dense, arch)
    for h in history:
        log(f"  {h['stage']:8s} round {h['round']}: val {100 * h['val_accuracy']:.2f} %  density {100 * h['density']:.2f} %")
    log(f"{arch} q={q:g}: pruned in {time.perf_counter() - t0:.0f} s")
    save_checkpoint(path, model, arch, config={"prune": prune_cfg, "history": history, "split": dc.data.split},
                    metrics={"val_accuracy": history[-1]["val_accuracy"], "density": history[-1]["density"]})
    return model, masks, history


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", nargs="+", default=["lenet5", "lenet300100"], choices=sorted(SWEEPS))
    p.add_argument("--qualities", type=float, nargs="+", help="override the sweep's pruning qualities")
    p.add_argument("--dense-epochs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3, help="prune → retrain rounds")
    p.add_argument("--retrain-epochs", type=int, default=2, help="epochs per retraining round")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--weight-decay", type=float, default=1e-4, help="L2 during dense training and retraining")
    p.add_argument("--init", default="linear", choices=["forgy", "density", "linear"])
    p.add_argument("--codec", default="huffman")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/deep_compression")
    p.add_argument("--frontier", default="results/frontier.csv")
    p.add_argument("--tag", default="", help="suffix of the run names (and of the cached pruned models), "
                   "for variants of the sweep, e.g. '_r4'")
    p.add_argument("--force", action="store_true", help="recompute finished sweep points")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = REPO_ROOT / args.out
    log("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    data = load_mnist(REPO_ROOT / "data", verbose=False)
    for arch in args.networks:
        sweep = SWEEPS[arch]
        dense, dense_acc = dense_model(arch, data, args, out)
        for q in args.qualities or sweep["qualities"]:
            base = DeepCompressionConfig(
                quality=q, layer_quality=tuple((n, s * q) for n, s in sweep["layer_quality_scale"].items()),
                rounds=args.rounds, retrain_epochs=args.retrain_epochs, weight_decay=args.weight_decay,
                finetune_epochs=args.finetune_epochs, init=args.init, codec=args.codec, seed=args.seed)
            pruned = masks = history = None
            for conv_bits, fc_bits in sweep["bits"]:
                cfg = dataclasses.replace(base, conv_bits=conv_bits, fc_bits=fc_bits)
                run = f"{arch}_q{q:g}_fc{fc_bits}" if arch == "lenet300100" else f"{arch}_q{q:g}_conv{conv_bits}_fc{fc_bits}"
                run += args.tag
                run_dir = out / run
                result_path = run_dir / "result.json"
                if result_path.exists() and not args.force:
                    saved = json.loads(result_path.read_text())
                    if saved["config"] == cfg.to_dict():
                        log(f"{run}: done already ({100 * saved['accuracy']:.2f} %, {saved['file_bits']:,} bits)")
                        append_points([_point(run, saved)], args.frontier)
                        continue
                dc = DeepCompression(cfg, data)
                if pruned is None:
                    pruned, masks, history = pruned_model(dc, dense, arch, out, q, args.tag)
                t0 = time.perf_counter()
                result, decoded = dc.compress(pruned, arch, masks, history)
                # the same model with the other entropy coder, for reference (same groups, other codec)
                other = "range" if cfg.codec != "range" else "huffman"
                alt = DeepCompression(dataclasses.replace(cfg, codec=other), data)
                alt_bits = 8 * len(encode_compressed(arch, [t.detach() for t in decoded.parameters()],
                                                     alt.group_specs(decoded)))
                d = result.to_json_dict()
                d.update(run=run, method=METHOD, dense_accuracy=dense_acc, seconds=time.perf_counter() - t0,
                         file_bits_other_codec={other: alt_bits}, file="model.mtq")
                run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(run_dir / "model.mtq", result.file_bytes)
                atomic_write_bytes(result_path, json.dumps(d, indent=1).encode())
                append_points([_point(run, d)], args.frontier)
                log(f"{run}: density {100 * result.density:.2f} %  after share (val) {100 * result.history[-3]['val_accuracy']:.2f} %"
                    f"  fine-tuned (val) {100 * result.accuracy_before_coding:.2f} %  decoded (test) {100 * result.accuracy:.2f} %  "
                    f"{result.file_bits:,} bits ({result.bits_per_weight:.3f} bits/weight, {result.compression_ratio:.1f}×; "
                    f"{other} {alt_bits:,} bits)")
    return 0


def _point(run: str, d: dict) -> dict:
    c = d["config"]
    bits = f"fc {c['fc_bits']} bits" if d["arch"] == "lenet300100" else f"conv {c['conv_bits']} / fc {c['fc_bits']} bits"
    notes = (f"q={c['quality']:g}, {c['rounds']} rounds x {c['retrain_epochs']} ep, {bits}, biases {c['biases']} "
             f"{c['bias_bits']} bits, {c['init']} init, {c['codec']}; density {100 * d['density']:.2f} %")
    return {"method": METHOD, "network": d["arch"], "accuracy": d["accuracy"], "file_bits": d["file_bits"],
            "run": run, "n_params": d["n_params"], "notes": notes}


if __name__ == "__main__":
    sys.exit(main())
