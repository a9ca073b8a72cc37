#!/usr/bin/env bash
# Extra ablation arm (issue 8): the thesis' formulation with the multipliers from the proximal
# bundle method (15 iterations, bundle 10, ζ = 1e5: the spec's "well-performing PBM setting"),
# which leaves the flat starting ξ where 15 FISTA iterations with ζ = 1e5 do not (see README).
# Same budget and seeds as experiments/ablation.sh.   bash experiments/ablation_extra.sh [EPOCHS] [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-12}; shift || true
SEEDS=${*:-0 1 2}
for seed in $SEEDS; do
  out=runs/ablation/e${EPOCHS}/thesis-bundle_seed${seed}
  [ -f "$out/result.json" ] && continue
  mkdir -p "$out"
  echo "[ablation] thesis (bundle multipliers) seed $seed ($EPOCHS epochs) -> $out"
  .venv/bin/python -m metaq_utils pipeline --epochs "$EPOCHS" --variant thesis --method bundle --seed "$seed" \
    --name "thesis-bundle_seed${seed}" --out-dir "$out" --use-final --max-cq 256 --quiet \
    --results "$out/result.json" > "$out/log.txt" 2>&1 || echo "[ablation] FAILED: $out (see $out/log.txt)"
done
