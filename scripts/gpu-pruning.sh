#!/usr/bin/env bash
# The pruning benchmark (issue 12) at its full set-up on one lent GPU: ConvStrix 28 px,
# 10,000 images, 24 trials, --max-epochs 20, 2 local workers, on Keras's JAX backend
# (the lent machines have JAX, not TensorFlow). One seed per call, sized by estimate
# (not yet run on a GPU) to fit the device's 10-minute limit; pass one pruner per call
# if it does not. The figures land in $OUT (or out/) as JSON.
#
# Here, once:   bash scripts/gpu-wheels.sh                       # .whl/, about 15 MiB
#               mkdir -p .data && cp ../shared/data/fashion-mnist/*.gz .data/
# There:        bash scripts/gpu-pruning.sh SEED [PRUNERS]       # carry .whl and .data
# On the CPU:   STRIX_GPU_SMOKE=1 bash scripts/gpu-pruning.sh 1 asha   # the --quick run
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:?usage: scripts/gpu-pruning.sh SEED [PRUNERS]}
pruners=${2:-none,median,asha}
out=${OUT:-out}
py=${PYTHON:-python3}
data=.data
if [[ -z ${STRIX_GPU_SMOKE:-} ]]; then
  [[ -d .whl ]] || { echo "no .whl/: run scripts/gpu-wheels.sh here and carry .whl" >&2; exit 2; }
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  size=()
else
  data=${STRIX_DATA_DIR:-../shared/data/fashion-mnist}
  size=(--quick)
fi
[[ -f $data/train-images-idx3-ubyte.gz ]] || { echo "no Fashion-MNIST in $data: copy the .gz files there" >&2; exit 2; }
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
mkdir -p "$out"
"$py" -m bench.studies.pruning "${size[@]}" --seeds "$seed" --pruners "$pruners" --query-trials 0 \
  --data-dir "$data" --out "$out/pruning-gpu-s$seed.json"
