#!/bin/bash
# issue 21: METaQ 2025 form on LeNet-5-Caffe, seed $1 of lambda_reg 5e-5 (chosen on seed 0's validation:
# higher sparse validation accuracy than 1.5e-5 at a third of H_Q), after the seed-0 run $2 of s4_caffe.sh
cd /work/main
while pgrep -f "s4_caffe.sh $2" >/dev/null; do sleep 15; done
.venv/bin/python experiments/metaq2025.py run --arch lenet5caffe --config lam5e-5 --seeds $1 --epochs 8
