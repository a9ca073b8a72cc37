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

The sweep points are runs of :class:`metaq_utils.campaign.Campaign` (issue 22; identity = network, run
name and the full Deep Compression configuration): finished points (a result.json of that identity;
one written before the runner is accepted when its network and configuration agree, and gets an
identity.json) are skipped, so the command resumes after an interruption; the dense and pruned stages
are trained only when a point that needs them runs. ``--force`` recomputes them: the old
``result.json`` / ``identity.json`` of each selected point are moved aside (``result.replaced-<time>.json``)
first. ``--status`` prints each point's state and trains nothing. No model selection is done on the test set:
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

from metaq_utils.campaign import Campaign, Run
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


def parser() -> argparse.ArgumentParser:
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
    p.add_argument("--force", action="store_true", help="recompute finished sweep points (their old result is "
                   "moved aside to result.replaced-<time>.json)")
    p.add_argument("--status", action="store_true", help="print each sweep point's state; trains nothing")
    return p


def identity(arch: str, run: str, cfg: DeepCompressionConfig) -> dict:
    return {"campaign": "deep_compression", "arch": arch, "run": run, "config": json.loads(json.dumps(cfg.to_dict()))}


def same_run(run: Run, res: dict) -> str | None:
    """A result written before the runner is this run if its network and configuration agree (what the
    old script compared)."""
    ident = run.identity
    bad = [f"arch {res.get('arch')!r} (declared {ident['arch']!r})"] if res.get("arch") != ident["arch"] else []
    saved = res.get("config") or {}
    for k in sorted(set(saved) | set(ident["config"])):
        if saved.get(k) != ident["config"].get(k):
            bad.append(f"config.{k} {saved.get(k)!r} (declared {ident['config'].get(k)!r})")
    return "; ".join(bad) or None


def campaign(args, data, command: str, root: Path | None = None) -> Campaign:
    """The declared sweep points (networks × qualities × bit settings, in that order); ``data()`` loads
    MNIST, and the dense / pruned stages are trained (or reloaded) once, when a point needing them runs."""
    out = Path(root) if root is not None else REPO_ROOT / args.out
    dense_cache: dict = {}
    pruned_cache: dict = {}

    def dense_for(arch):
        if arch not in dense_cache:
            dense_cache[arch] = dense_model(arch, data(), args, out)
        return dense_cache[arch]

    def job(o: Path, arch: str, q: float, run: str, cfg: DeepCompressionConfig) -> dict:
        dense, dense_acc = dense_for(arch)
        dc = DeepCompression(cfg, data())
        if (arch, q) not in pruned_cache:
            pruned_cache[arch, q] = pruned_model(dc, dense, arch, out, q, args.tag)
        pruned, masks, history = pruned_cache[arch, q]
        t0 = time.perf_counter()
        result, decoded = dc.compress(pruned, arch, masks, history)
        # the same model with the other entropy coder, for reference (same groups, other codec)
        other = "range" if cfg.codec != "range" else "huffman"
        alt = DeepCompression(dataclasses.replace(cfg, codec=other), data())
        alt_bits = 8 * len(encode_compressed(arch, [t.detach() for t in decoded.parameters()],
                                             alt.group_specs(decoded)))
        d = result.to_json_dict()
        d.update(run=run, method=METHOD, dense_accuracy=dense_acc, seconds=time.perf_counter() - t0,
                 file_bits_other_codec={other: alt_bits}, file="model.mtq")
        o.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(o / "model.mtq", result.file_bytes)
        log(f"{run}: density {100 * result.density:.2f} %  after share (val) {100 * result.history[-3]['val_accuracy']:.2f} %"
            f"  fine-tuned (val) {100 * result.accuracy_before_coding:.2f} %  decoded (test) {100 * result.accuracy:.2f} %  "
            f"{result.file_bits:,} bits ({result.bits_per_weight:.3f} bits/weight, {result.compression_ratio:.1f}×; "
            f"{other} {alt_bits:,} bits)")
        return d

    runs = []
    for arch in args.networks:
        sweep = SWEEPS[arch]
        for q in args.qualities or sweep["qualities"]:
            base = DeepCompressionConfig(
                quality=q, layer_quality=tuple((n, s * q) for n, s in sweep["layer_quality_scale"].items()),
                rounds=args.rounds, retrain_epochs=args.retrain_epochs, weight_decay=args.weight_decay,
                finetune_epochs=args.finetune_epochs, init=args.init, codec=args.codec, seed=args.seed)
            for conv_bits, fc_bits in sweep["bits"]:
                cfg = dataclasses.replace(base, conv_bits=conv_bits, fc_bits=fc_bits)
                run = f"{arch}_q{q:g}_fc{fc_bits}" if arch == "lenet300100" else f"{arch}_q{q:g}_conv{conv_bits}_fc{fc_bits}"
                run += args.tag
                runs.append(Run(run, out / run, identity(arch, run, cfg),
                                lambda o, arch=arch, q=q, run=run, cfg=cfg: job(o, arch, q, run, cfg)))
    return Campaign("deep_compression", runs, out / "_state", command=command, legacy=same_run,
                    log=lambda msg: log(msg))


def move_aside(c: Campaign) -> None:
    """``--force``: the selected points' old result.json / identity.json go to result.replaced-<time>.json."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for r in c.runs:
        for name in ("result", "identity"):
            f = Path(r.out) / f"{name}.json"
            if f.exists():
                f.rename(f.with_name(f"{name}.replaced-{stamp}.json"))
                log(f"{r.name}: {f.name} moved aside to {name}.replaced-{stamp}.json (--force)")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(1)
    command = " ".join([Path(sys.executable).name, *(sys.argv if argv is None else ["experiments/deep_compression.py", *argv])])
    log("command: " + command)
    loaded = []

    def data():
        if not loaded:
            loaded.append(load_mnist(REPO_ROOT / "data", verbose=False))
        return loaded[0]

    c = campaign(args, data, command)
    if args.status:
        for name, state in c.status().items():
            print(f"{name}: {state}")
        return 0
    if args.force:
        move_aside(c)
    c.run("w0")
    results = c.results()
    for name, saved in results.items():
        log(f"{name}: done ({100 * saved['accuracy']:.2f} %, {saved['file_bits']:,} bits)")
    append_points([_point(name, saved) for name, saved in results.items()], args.frontier)
    return 1 if any(v == "failed" for v in c.status().values()) else 0


def _point(run: str, d: dict) -> dict:
    c = d["config"]
    bits = f"fc {c['fc_bits']} bits" if d["arch"] == "lenet300100" else f"conv {c['conv_bits']} / fc {c['fc_bits']} bits"
    notes = (f"q={c['quality']:g}, {c['rounds']} rounds x {c['retrain_epochs']} ep, {bits}, biases {c['biases']} "
             f"{c['bias_bits']} bits, {c['init']} init, {c['codec']}; density {100 * d['density']:.2f} %")
    return {"method": METHOD, "network": d["arch"], "accuracy": d["accuracy"], "file_bits": d["file_bits"],
            "run": run, "n_params": d["n_params"], "notes": notes}


if __name__ == "__main__":
    sys.exit(main())
