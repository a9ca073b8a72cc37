"""Ship a run's model as the workspace's headline: copy its trained checkpoint to
BestModelsBeforeQuantization/, its quantized checkpoint and smallest compressed file to
BestModelsAfterQuantization/, re-evaluate the shipped compressed file from disk, and write
results/headline.json (compressed_file, accuracy, file_bits, the goal, and how to reproduce).

    python experiments/ship_headline.py runs/ours/<name> --stem headline_lenet5
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from metaq_utils.ablation import run_selection
from metaq_utils.nn.checkpoints import AFTER_DIR, BEFORE_DIR, load_checkpoint
from metaq_utils.nn.data import load_mnist
from metaq_utils.nn.training import evaluate
from metaq_utils.pipeline import load_any

REPO = Path(__file__).resolve().parent.parent

GOAL = {"accuracy": 0.99, "file_bits": 23_694}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", help="a run folder with result.json (runs/ours/NAME or runs/reproduction/NAME)")
    ap.add_argument("--stem", default="headline_lenet5")
    ap.add_argument("--no-headline", action="store_true",
                    help="only ship the files (e.g. the thesis reproduction); leave results/headline.json alone")
    args = ap.parse_args()
    run = Path(args.run)
    res = json.loads((run / "result.json").read_text())
    name = run.name
    cq = res["selected"]["C_Q"]
    best = min(res["codecs"], key=lambda c: c["file_bits"])
    src_before, src_after = run / f"{name}.pt", run / f"{name}_CQ{cq}.pt"
    src_file = run / f"{name}_CQ{cq}.{best['codec']}.mtq"
    for p in (src_before, src_after, src_file):
        load_any(p)                                   # verifies checkpoints / decodes the file
    before = BEFORE_DIR / f"{args.stem}.pt"
    after = AFTER_DIR / f"{args.stem}_CQ{cq}.pt"
    mtq = AFTER_DIR / f"{args.stem}_CQ{cq}.{best['codec']}.mtq"
    shutil.copyfile(src_before, before)
    shutil.copyfile(src_after, after)
    shutil.copyfile(src_file, mtq)
    model, arch, file_bits, n = load_any(mtq)
    data = load_mnist(REPO / "data", verbose=False)
    acc = evaluate(model, data.test_x, data.test_y)["accuracy"]
    q_acc = evaluate(load_checkpoint(after).build_model(), data.test_x, data.test_y)["accuracy"]
    if abs(acc - q_acc) > 0:
        raise SystemExit(f"the decoded file ({acc}) and the quantized checkpoint ({q_acc}) disagree")
    headline = {
        "compressed_file": str(mtq.relative_to(REPO)), "accuracy": acc, "file_bits": file_bits,
        # PROTOCOL.md: where the run's choices were made (older runs: "test"), and its validation accuracy
        "selection": run_selection(res), "val_accuracy": res.get("val_accuracy"), "split": res.get("split"),
        "n_params": n, "compression_ratio": 32 * n / file_bits, "bits_per_weight": file_bits / n,
        "codec": best["codec"], "C_Q": cq, "trained_checkpoint": str(before.relative_to(REPO)),
        "quantized_checkpoint": str(after.relative_to(REPO)), "source_run": str(run),
        "reproduce": res.get("command", f"see {run}/result.json"),
        "goal": GOAL, "goal_met": acc >= GOAL["accuracy"] and file_bits <= GOAL["file_bits"],
        "evaluate": f"python -m metaq_utils evaluate {mtq.relative_to(REPO)} --json",
    }
    if not args.no_headline:
        (REPO / "results" / "headline.json").write_text(json.dumps(headline, indent=1) + "\n")
    print(json.dumps(headline, indent=1))


if __name__ == "__main__":
    main()
