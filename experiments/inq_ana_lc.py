"""INQ, ANA and LC-mix baselines (issue 7): small sweeps on LeNet-5 from the pretrained plain LeNet-5
(``runs/ours/plain_pretrain.pt``, 99.32 % test accuracy; starting from it saves the dense training).

Each run writes ``runs/<inq|ana|lc_mix>/<run>/result.json`` and ``model.mtq`` (the file whose size is
reported: decoded-file test accuracy on the full test set, whole-file bits) and is appended to
``results/frontier.csv`` (methods ``inq``, ``ana``, ``lc-mix``). Finished runs (same configuration)
are skipped; ``--force`` recomputes them.

    nice -n 10 .venv/bin/python experiments/inq_ana_lc.py > runs/inq/inq_ana_lc.log 2>&1

About 40 epochs of LeNet-5 in all (INQ 3 + 3 + 0 + 3 + 0 + 4, ANA 5 × 4, LC 10 + 10), ~12 minutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from metaq_utils.baselines.ana import ANA, ANAConfig
from metaq_utils.baselines.inq import INQ, INQConfig
from metaq_utils.baselines.lc_mix import MIXES, LCConfig, LCMix
from metaq_utils.frontier import append_points
from metaq_utils.nn.checkpoints import REPO_ROOT, atomic_write_bytes, load_checkpoint
from metaq_utils.nn.data import load_mnist

PRETRAINED = "runs/ours/plain_pretrain.pt"
ARCH = "lenet5"

# run name -> (method folder, algorithm, config)
SWEEP = {
    # INQ, 5 bits: the paper's schedule, an even one, and one-shot projection (no incremental retraining)
    "inq_b5_paper": ("inq", INQ, INQConfig(fractions=(0.5, 0.75, 0.875, 1.0), epochs_per_step=1, bits=5)),
    "inq_b5_even": ("inq", INQ, INQConfig(fractions=(0.25, 0.5, 0.75, 1.0), epochs_per_step=1, bits=5)),
    "inq_b5_oneshot": ("inq", INQ, INQConfig(fractions=(1.0,), epochs_per_step=1, bits=5)),
    # INQ, 3 bits ({0, ±2^n1, ±2^(n1-1), ±2^(n1-2)}): the schedule matters here
    "inq_b3_paper": ("inq", INQ, INQConfig(fractions=(0.5, 0.75, 0.875, 1.0), epochs_per_step=1, bits=3)),
    "inq_b3_oneshot": ("inq", INQ, INQConfig(fractions=(1.0,), epochs_per_step=1, bits=3)),
    "inq_b3_fine": ("inq", INQ, INQConfig(fractions=(0.5, 0.75, 0.875, 0.9375, 1.0), epochs_per_step=1, bits=3)),
    # ANA, ternary weights, 4 epochs (the last one hard): lower layers first (paper) vs upper first
    "ana_tern_lower_linear": ("ana", ANA, ANAConfig(epochs=4, quantizer="ternary", shape="linear", order="lower_first")),
    "ana_tern_upper_linear": ("ana", ANA, ANAConfig(epochs=4, quantizer="ternary", shape="linear", order="upper_first")),
    # the same two with another seed (batch order), and every layer annealed at once (cosine)
    "ana_tern_lower_linear_s1": ("ana", ANA, ANAConfig(epochs=4, quantizer="ternary", shape="linear",
                                                       order="lower_first", seed=1)),
    "ana_tern_upper_linear_s1": ("ana", ANA, ANAConfig(epochs=4, quantizer="ternary", shape="linear",
                                                       order="upper_first", seed=1)),
    "ana_tern_simult_cosine": ("ana", ANA, ANAConfig(epochs=4, quantizer="ternary", shape="cosine",
                                                     order="simultaneous")),
    # LC: seed 003's two best LeNet-5 mixes
    "lc_conv-prune_fc-lowrank": ("lc_mix", LCMix, LCConfig(mix=MIXES["conv-prune_fc-lowrank"])),
    "lc_conv-prune_fc-quant": ("lc_mix", LCMix, LCConfig(mix=MIXES["conv-prune_fc-quant"])),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def notes(d: dict) -> str:
    c = d["config"]
    if d["method"] == "inq":
        s = f"INQ b={c['bits']}, fractions {c['fractions']}, {c['epochs_per_step']} ep/step"
    elif d["method"] == "ana":
        s = f"ANA {c['quantizer']}, {c['epochs']} ep, {c['shape']} {c['order']}, noise {c['noise_scale']:g}"
    else:
        s = "LC " + ", ".join(f"{n.split('.')[0]} {v}" for n, v in d["extra"]["describe"].items())
        s += f"; {c['steps']} steps x {c['epochs_per_step']} ep, mu0={c['mu0']:g} a={c['a']:g}"
        if d["extra"]["ranks"]:
            s += f"; low-rank stored as {2 ** c['lowrank_bits']}-value k-means reconstruction"
    return s + f"; biases {c['biases']}; from {PRETRAINED}"


def point(run: str, d: dict) -> dict:
    return {"method": d["method"], "network": d["arch"], "accuracy": d["accuracy"], "file_bits": d["file_bits"],
            "run": run, "n_params": d["n_params"], "notes": notes(d)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", choices=sorted(SWEEP), default=list(SWEEP))
    p.add_argument("--frontier", default="results/frontier.csv")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    log("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    data = load_mnist(REPO_ROOT / "data", verbose=False)
    ck = load_checkpoint(REPO_ROOT / PRETRAINED, expected_arch=ARCH)
    pretrained = ck.build_model()
    for run in args.runs:
        folder, algo, cfg = SWEEP[run]
        run_dir = REPO_ROOT / "runs" / folder / run
        result_path = run_dir / "result.json"
        if result_path.exists() and not args.force:
            saved = json.loads(result_path.read_text())
            if saved["config"] == cfg.to_dict():
                log(f"{run}: done already ({100 * saved['accuracy']:.2f} %, {saved['file_bits']:,} bits)")
                append_points([point(run, saved)], args.frontier)
                continue
        t0 = time.perf_counter()
        result, _ = algo(cfg, data).run(pretrained, ARCH)
        d = result.to_json_dict()
        d.update(run=run, pretrained=PRETRAINED, pretrained_accuracy=ck.metrics.get("test_accuracy"),
                 seconds=time.perf_counter() - t0, file="model.mtq")
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "model.mtq", result.file_bytes)
        atomic_write_bytes(result_path, json.dumps(d, indent=1).encode())
        append_points([point(run, d)], args.frontier)
        stages = "  ".join(f"{h['stage']} {100 * h['val_accuracy']:.2f}" for h in d["history"]
                           if h.get("val_accuracy") is not None)          # stages on validation
        log(f"{run}: {stages}")
        log(f"{run}: decoded {100 * d['accuracy']:.2f} %  {d['file_bits']:,} bits "
            f"({d['compression_ratio']:.1f}x)  {d['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
