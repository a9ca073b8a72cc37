#!/usr/bin/env bash
# Issue 13: our adjacent-zero variant under the protocol. λ ∈ {5e-6, 1e-5, 2e-5} × seeds 0-2, each
# fine-tuned 8 epochs from the protocol dense reference of its seed; C_Q chosen on validation
# (smallest file with validation accuracy ≥ 99 %); λ chosen afterwards on the validation means
# (experiments/protocol_campaign.py aggregate). Resumable: a run with a result.json is skipped.
set -u
cd "$(dirname "$0")/.."
for lam in 1e-5 5e-6 2e-5; do
  for seed in 0 1 2; do
    name="protocol/adj_lam${lam}_e8/seed${seed}"
    if [ -f "runs/ours/${name}/result.json" ]; then echo "done: ${name}"; continue; fi
    rm -f "runs/ours/${name}/last.pt"
    echo "$(date -u +%FT%TZ) start ${name}"
    .venv/bin/python experiments/ours.py \
      --pretrained "runs/dense_reference/protocol/lenet5/adam_cos_aug_seed${seed}/best.pt" \
      --lam "${lam}" --epochs 8 --max-cq 151 --seed "${seed}" --name "${name}" \
      > "runs/ours/protocol/adj_lam${lam}_e8_seed${seed}.log" 2>&1 || echo "FAILED ${name}"
  done
done
