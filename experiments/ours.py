"""Our own variant (issue 8), clearly separated from METaQ: "adjacent-zero".

Starting from a plain pretrained LeNet-5, fine-tune with the adjacent-bucket soft-entropy term
(spec §4.4, ``METaQConfig(variant="adjacent")``) on a grid centred at zero (w0 = 0, odd C, so one
bucket is {≈0}); no L2 term (α = 0). Then sweep post-training quantization on zero-centred grids
(odd C_Q), write every point as a real range-coded file, and pick the smallest file whose
validation accuracy is at least ``--target`` (PROTOCOL.md; ``--select-on test`` picks on the test
set instead and marks the result test-selected). The test set is evaluated once, after selection,
for the unquantized and the selected model. Everything goes to runs/ours/<name>/.

    python experiments/ours.py --pretrained runs/ours/plain_pretrain.pt --lam 2e-5 --epochs 6 --name adj_lam2e-5
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metaq_utils.core.grid import Grid
from metaq_utils.nn.checkpoints import load_checkpoint, save_checkpoint
from metaq_utils.nn.data import load_mnist
from metaq_utils.nn.ptq import check_clean_validation, model_vector, quantize_model, sweep_cq
from metaq_utils.nn.regularizer import METaQConfig, METaQRegularizer
from metaq_utils.nn.training import TrainConfig, evaluate, train
from metaq_utils.pipeline import code_with_every_codec

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrained", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lam", type=float, default=2e-5)
    ap.add_argument("--C", type=int, default=15, help="training grid buckets (odd: a bucket at 0)")
    ap.add_argument("--r", type=float, default=None, help="half-range (default: max |w| of the pretrained model)")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--max-cq", type=int, default=301)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prune-epochs", type=int, default=0,
                    help="stage 2: freeze the weights in the zero bucket of the training grid at 0 and retrain "
                         "the others (with the same entropy term) for this many epochs")
    ap.add_argument("--select-on", default="validation", choices=["validation", "test"],
                    help="split on which C_Q is chosen (test: explicit, the result is marked test-selected)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = REPO / "runs" / "ours" / args.name
    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist(REPO / "data", verbose=False)
    ck = load_checkpoint(args.pretrained)
    if args.select_on == "validation":
        check_clean_validation(ck.config, data.split)   # the pretrained net must not have seen the split
    model = ck.build_model()
    w = model_vector(model)
    r = float(np.float32(args.r if args.r is not None else np.abs(w).max() * 1.001))
    metaq = METaQConfig(C=args.C, w0=0.0, r=r, lam=args.lam, alpha=0.0, variant="adjacent")
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, betas=(0.9, 0.99), seed=args.seed, augment=True,
                      lr_schedule="cosine")
    t0 = time.time()
    res = train(model, data, cfg, regularizer=METaQRegularizer(model, metaq), progress=False,
                checkpoint_path=out / "last.pt", resume=True, select_on=args.select_on)
    history = list(res.history)
    if args.prune_epochs > 0:
        from metaq_utils.nn.training import CompositeRegularizer, FixedMasks
        half = metaq.grid.delta / 2
        masks = {n: p.detach().abs() >= half for n, p in model.named_parameters() if n.endswith("weight")}
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in masks:
                    p.masked_fill_(~masks[n], 0.0)
        fixed = FixedMasks(masks)
        cfg2 = TrainConfig(epochs=args.prune_epochs, lr=args.lr / 2, betas=(0.9, 0.99), seed=args.seed + 1,
                           augment=True, lr_schedule="cosine")
        # train() calls the composite's after_step (the mask's) after every optimizer step
        res2 = train(model, data, cfg2, regularizer=CompositeRegularizer(fixed, METaQRegularizer(model, metaq)),
                     progress=False, select_on=args.select_on)
        history += [{**row, "stage": "prune-retrain"} for row in res2.history]
        res = res2
    save_checkpoint(out / f"{args.name}.pt", model, "lenet5",
                    config={"train": cfg.to_dict(), "regularizer": {"metaq": metaq.to_dict()},
                            "pretrained": str(args.pretrained), "command": " ".join(sys.argv),
                            "split": data.split, "selection": args.select_on},
                    metrics=res.final, grid={"w0": 0.0, "r": r, "C": args.C})
    sx, sy = (data.val_x, data.val_y) if args.select_on == "validation" else (data.test_x, data.test_y)
    cqs = [c for c in range(3, args.max_cq + 1, 2)]
    pts = sweep_cq(model, sx, sy, cqs, evaluated_on=args.select_on, w0=0.0, r=r, arch="lenet5", progress=False)
    ok = [p for p in pts if p.accuracy >= args.target]
    best = min(ok, key=lambda p: p.file_bits) if ok else max(pts, key=lambda p: p.accuracy)
    grid = Grid(0.0, r, best.C_Q)
    q, _ = quantize_model(model, grid)
    # after selection: validation and test accuracy of the two reported models (test once each)
    unq_val = evaluate(model, data.val_x, data.val_y)["accuracy"]
    unq = evaluate(model, data.test_x, data.test_y)["accuracy"]
    q_val = evaluate(q, data.val_x, data.val_y)["accuracy"]
    q_test = evaluate(q, data.test_x, data.test_y)["accuracy"]
    save_checkpoint(out / f"{args.name}_CQ{best.C_Q}.pt", q, "lenet5",
                    config={"from": f"{args.name}.pt", "split": data.split, "selection": args.select_on},
                    metrics={"accuracy": q_test, "val_accuracy": q_val, "test_accuracy": q_test,
                             "selection": args.select_on, "entropy_bits": best.entropy_bits, "C_Q": best.C_Q},
                    grid={"w0": 0.0, "r": r, "C": best.C_Q})
    rows = code_with_every_codec(q, "lenet5", grid, data, out_dir=out, stem=f"{args.name}_CQ{best.C_Q}")
    result = {"command": "python experiments/ours.py " + " ".join(sys.argv[1:]), "r": r,
              "history": history, "selection": args.select_on, "split": data.split,
              "unquantized_accuracy": unq, "unquantized_test_accuracy": unq, "unquantized_val_accuracy": unq_val,
              "val_accuracy": q_val, "test_accuracy": q_test,
              "sweep": [p.to_dict() for p in pts], "selected": best.to_dict(), "target": args.target,
              "reached_target": bool(ok), "codecs": [row.__dict__ for row in rows], "seconds": time.time() - t0}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{args.name}: unquantized val {100 * unq_val:.2f} % / test {100 * unq:.2f} %, final-epoch soft entropy "
          f"on grid {res.final.get('entropy_grid_bits', float('nan')):,.0f} bits; selected on {args.select_on} "
          f"C_Q={best.C_Q}: val {100 * q_val:.2f} % / test {100 * q_test:.2f} %, {best.file_bits:,} bits "
          f"(target reached: {bool(ok)})")
    for row in rows:
        print(f"  {row.codec:8s} {row.file_bits:9,d} bits  {row.compression_ratio:6.1f}x  "
              f"val {100 * row.decoded_val_accuracy:.2f} %  test {100 * row.decoded_accuracy:.2f} %")


if __name__ == "__main__":
    main()
