# The two commands of the README:  `make run`  and  `make test`.
PY := .venv/bin/python
.PHONY: setup run test bench
setup:
	@bash scripts/setup.sh
run: setup
	$(PY) -m metaq_utils pipeline --epochs 30 --name metaq_lenet5
# unit tests, then the notebooks with nbval (checked cells: # NBVAL_CHECK_OUTPUT)
test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests notebooks --nbval-lax --nbval-current-env
bench: setup
	$(PY) bench/bench_training.py
