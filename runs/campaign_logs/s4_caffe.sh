#!/bin/bash
# issue 21: METaQ 2025 form on LeNet-5-Caffe: lambda_reg on seed 0's validation ($1 = config), then seeds 1, 2 of the chosen one
cd /work/main
while pgrep -f "s4_l300.sh $2" >/dev/null; do sleep 15; done
.venv/bin/python experiments/metaq2025.py run --arch lenet5caffe --config $1 --seeds ${3:-0} --epochs 8
