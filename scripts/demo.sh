#!/usr/bin/env bash
# Install everything, then tune a CNN end to end on this machine: the embedded MongoDB,
# 2 local workers, real Fashion-MNIST at 28 px (study simplecnn-28px), and at the end what
# the numbers mean. Pass any `strix launch` flag to change it, e.g. --max-evals 20.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${STRIX_DATA_DIR:-}" ] && [ -f ../shared/data/fashion-mnist/train-labels-idx1-ubyte.gz ]; then
  export STRIX_DATA_DIR="$PWD/../shared/data/fashion-mnist"  # recorded with the study
fi
# Sized to learn in about 4 minutes on 2 CPU cores: 12,000 images (10,800 to train, 1,200
# to validate), up to 5 epochs a trial, 4 TPE trials, ASHA stopping the laggards after one.
# Measured (docs/benchmarks.md): best val accuracy 0.891, `strix final` test accuracy 0.864.
DEMO=(--model simplecnn --local-workers 2 --max-evals 4 --image-size 28 --max-epochs 5
      --limit 12000 --seed 1)
status=0
.venv/bin/strix launch "${DEMO[@]}" "$@" || status=$?
[ "$status" = 0 ] || exit "$status"

model=simplecnn size=28 key=  # the study's name, as launch derives it from the flags given
set -- "${DEMO[@]}" "$@"
while [ $# -gt 0 ]; do
  case "$1" in
    --exp-key) key=$2 ;;
    --model) model=$2 ;;
    --image-size) size=$2 ;;
  esac
  shift
done
key=${key:-$model-${size}px}
cat <<TEXT

What the numbers mean (study $key):
  val_accuracy  the share of the held-out validation images that a trial's kept weights
                classify right; 0.10 is chance (10 classes). The best trial is on top.
  loss          1 - val_accuracy: what TPE minimises when it proposes the next trial.
  pruned_at     the epoch ASHA stopped a trial that was behind the others; its result
                still teaches TPE which settings not to try again.
  seconds       each trial's wall time on its worker.
Next, retrain the best trial on train+val and test it on the 10,000 untouched test images:
  .venv/bin/strix final --exp-key $key
The validation images are few, so close trials are within noise of each other; the test
accuracy that \`final\` prints is the number to quote.
TEXT
