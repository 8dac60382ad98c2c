#!/usr/bin/env bash
# One-step set-up: install lrfr-plugins (editable) with its test extras into the current Python.
# Where no torch is installed it first installs torch==2.13.0, the CPU build on these machines, so that
# a CPU machine never pulls a multi-GB CUDA build. An installed torch (CPU or CUDA) is kept as it is.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  echo "setup: no torch found; installing torch==2.13.0 (CPU build)"
  "$PYTHON" -m pip install --quiet "torch==2.13.0"
fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test,fast]"
# pyenv keeps console scripts behind shims; refresh them so 'lrfr' is on PATH at once.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
echo "setup: lrfr-plugins $("$PYTHON" -c 'import lrfr_plugins; print(lrfr_plugins.__version__)') installed; try: lrfr --help"
