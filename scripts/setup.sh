#!/usr/bin/env bash
# Create .venv and install Strix with everything it needs (idempotent).
# Also makes sure Fashion-MNIST is on this machine: ../shared/data/fashion-mnist, or the
# Debian package dataset-fashion-mnist (online users can rely on keras.datasets instead).
# Everything goes into .venv except that package, the one system-wide install: it is
# announced before apt-get runs, and skipped when STRIX_DATA_DIR or a local copy exists.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: need Python >= 3.11 (found $("$PY" --version 2>&1)); set PYTHON=python3.11" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.strix-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev,jax]"  # jax: the suite also runs on JAX
  touch "$stamp"
fi

if [ -z "${STRIX_DATA_DIR:-}" ] && [ ! -f ../shared/data/fashion-mnist/train-labels-idx1-ubyte.gz ] \
   && [ ! -d /usr/share/datasets/fashion-mnist ]; then
  echo "setup: Fashion-MNIST not found locally" >&2
  if command -v apt-get >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    echo "setup: installing it system-wide: ${SUDO:+sudo }apt-get install dataset-fashion-mnist" \
      "(about 30 MB into /usr/share/datasets/fashion-mnist); to avoid that, set" \
      "STRIX_DATA_DIR to a folder with the four idx files, or run without apt and let" \
      "Strix download them through keras.datasets" >&2
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist \
      || echo "setup: could not install it; Strix will try keras.datasets (needs internet)" >&2
  fi
fi
