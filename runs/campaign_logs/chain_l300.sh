#!/bin/bash
# session 2026-12-04 08:55: LeNet-300-100 search to 12 trials (NSGA-II generation 2)
cd /work/main
export OMP_NUM_THREADS=1
PY=.venv/bin/python
$PY experiments/benchmarks.py search --arch lenet300100 --trials 12
$PY experiments/benchmarks.py front --arch lenet300100
