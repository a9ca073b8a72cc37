#!/bin/bash
# issue 20 second batch (session 3): sign and delta ablations, then the 30-epoch budget
cd /work/main
.venv/bin/python experiments/metaq2025.py run --config flipped_sign --seeds 0,1,2 --epochs 8
.venv/bin/python experiments/metaq2025.py run --config delta5,delta20 --seeds 0 --epochs 8
.venv/bin/python experiments/metaq2025.py run --config logged --seeds 0,1,2 --epochs 30
