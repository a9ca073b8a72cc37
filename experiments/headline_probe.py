"""One run of the headline recipe on seed 0 with explicit knobs, validation only (no test set):
a probe of a knob the search does not cover yet (e.g. ``structure``), into runs/headline/probes/<name>/.

    python experiments/headline_probe.py --name g1_s0.7 --density-scale 0.7 --step 0.6 --alpha 0.5 --structure 1
"""
import argparse, sys
from pathlib import Path
import torch
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from metaq_utils.nn.data import load_mnist  # noqa: E402
from metaq_utils.recipes.prune_quantize import RecipeConfig, run_recipe  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--name", required=True)
for k, v in RecipeConfig().to_dict().items():
    if isinstance(v, (int, float, str)) and not isinstance(v, bool):
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
ap.add_argument("--threads", type=int, default=1)
a = ap.parse_args()
torch.set_num_threads(a.threads)
cfg = RecipeConfig(**{k: getattr(a, k) for k in RecipeConfig().to_dict() if hasattr(a, k) and k != "keep"})
res = run_recipe(REPO / f"runs/dense_reference/protocol/lenet5/adam_cos_aug_seed{cfg.seed}/best.pt",
                 load_mnist(REPO / "data"), cfg, REPO / "runs/headline/probes" / a.name, evaluate_test=False,
                 extra={"command": "python experiments/headline_probe.py " + " ".join(sys.argv[1:])})
print(f"{a.name}: val {100 * res['val_accuracy']:.2f} %, {res['file_bits']:,} bits, density {res['weight_density']:.4f}")
