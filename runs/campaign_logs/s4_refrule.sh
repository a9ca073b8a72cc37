#!/bin/bash
# issue 20: the reference's own (test-set) selection rule on reruns of logged_e30 (reported apart, selection=test)
cd /work/main
.venv/bin/python experiments/metaq2025.py run --config logged --epochs 30 --seeds $1 --reference-rule-on-test
