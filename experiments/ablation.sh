#!/usr/bin/env bash
# Ablation of the entropy term (issue 8): the same training budget, seeds and everything else,
# only the variant changes. Each run: train (final epoch, no selection on the test set),
# C_Q sweep with real range-coded file sizes, every codec at the selected C_Q.
# Finished runs (result.json present) are skipped, so the script can be re-run to resume.
#   bash experiments/ablation.sh [EPOCHS] [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-12}; shift || true
SEEDS=${*:-0 1 2}
for seed in $SEEDS; do
  for variant in none thesis flipped sorted adjacent; do
    out=runs/ablation/e${EPOCHS}/${variant}_seed${seed}
    [ -f "$out/result.json" ] && continue
    mkdir -p "$out"
    echo "[ablation] $variant seed $seed ($EPOCHS epochs) -> $out"
    .venv/bin/python -m metaq_utils pipeline --epochs "$EPOCHS" --variant "$variant" --seed "$seed" \
      --name "${variant}_seed${seed}" --out-dir "$out" --use-final --max-cq 256 --quiet \
      --results "$out/result.json" > "$out/log.txt" 2>&1 || echo "[ablation] FAILED: $out (see $out/log.txt)"
  done
done
