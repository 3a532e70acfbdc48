#!/usr/bin/env bash
# Install everything, then lint and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pytest exits 5 when it collected no test: that is a failure here too
.venv/bin/python -m pytest "$@"
