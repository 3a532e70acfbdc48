#!/usr/bin/env bash
# Install everything, then run a small ConvStrix study end to end on this machine:
# the embedded MongoDB, 2 local workers, real Fashion-MNIST at 32 px (study convstrix-32px).
# Pass any `strix launch` flag to change it, e.g. --max-evals 50 --image-size 128.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${STRIX_DATA_DIR:-}" ] && [ -f ../shared/data/fashion-mnist/train-labels-idx1-ubyte.gz ]; then
  export STRIX_DATA_DIR="$PWD/../shared/data/fashion-mnist"  # recorded with the study
fi
exec .venv/bin/strix launch --model convstrix --local-workers 2 \
  --max-evals 4 --image-size 32 --max-epochs 2 --limit 2000 --seed 1 --clamp "$@"
