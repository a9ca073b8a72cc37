#!/bin/bash
# waits for the first ablation process (none_pruned, zero_bucket_off) then the 30-epoch control
cd /work/main
while pgrep -f "config none_pruned,zero_bucket_off" >/dev/null; do sleep 20; done
.venv/bin/python experiments/metaq2025.py run --config none_pruned --seeds 0,1,2 --epochs 30
