#!/bin/bash
# issue 21: METaQ 2025 form on LeNet-300-100: lambda on seed 0's validation (the log's 0.0015 empties it in one epoch)
cd /work/main
.venv/bin/python experiments/metaq2025.py run --arch lenet300100 --config logged,lam5e-4,lam1.5e-4,lam5e-5 --seeds 0 --epochs 8
