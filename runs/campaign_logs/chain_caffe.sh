#!/bin/bash
# session 2026-12-04 08:55: LeNet-5-Caffe search, 3 more trials (two enqueued near the best-validation trial #2), then seeds
cd /work/main
export OMP_NUM_THREADS=1
PY=.venv/bin/python
$PY experiments/benchmarks.py search --arch lenet5caffe --trials 9 --enqueue '[{"density_scale": 1.2, "step": 0.53, "alpha": 0.87, "prune_lr": 0.00052, "structure": 0.4}, {"density_scale": 0.85, "step": 0.53, "alpha": 0.87, "prune_lr": 0.00052, "structure": 0.4}]'
$PY experiments/benchmarks.py front --arch lenet5caffe
