# The two commands of the README:  `make run`  and  `make test`.
PY := .venv/bin/python
.PHONY: setup run test bench lab
setup:
	@bash scripts/setup.sh
run: setup
	$(PY) -m metaq_utils metaq2025 --epochs 30
# unit tests, then the notebooks with nbval (checked cells: # NBVAL_CHECK_OUTPUT)
test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests notebooks --nbval-lax --nbval-current-env
bench: setup
	$(PY) bench/bench_training.py
# JupyterLab on notebooks/ with the workspace's kernel; as root (CI, containers) with --allow-root.
# More options: make lab LAB_ARGS="--no-browser --port=8899"
LAB_ARGS ?=
lab: setup
	$(PY) -m jupyterlab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)
