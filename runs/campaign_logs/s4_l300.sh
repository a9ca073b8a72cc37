#!/bin/bash
# issue 21: METaQ 2025 form on LeNet-300-100, seeds 1 and 2 of every lambda (seed 0 done in s3_l300)
cd /work/main
.venv/bin/python experiments/metaq2025.py run --arch lenet300100 --config lam1.5e-4,lam5e-5,lam5e-4,logged --seeds $1 --epochs 8
