# The two commands of the README:  `make run`  and  `make test`.
PY := .venv/bin/python
.PHONY: setup run test bench
setup:
	@bash scripts/setup.sh
run: setup
	$(PY) -m metaq_utils train --out BestModelsBeforeQuantization/lenet5_plain.pt
test: setup
	$(PY) -m pytest -q tests
bench: setup
	$(PY) bench/bench_training.py
