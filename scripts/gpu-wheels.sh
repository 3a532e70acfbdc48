#!/usr/bin/env bash
# Fetch the wheels bench/studies/gpu_study.py needs on a GPU machine that has JAX, opencv,
# scikit-learn, tqdm, numpy, scipy and matplotlib but not Keras/hyperopt/pymongo/nx-27017
# (the lent H100/H200 machines). They land in .whl/ (git-ignored), about 10 MiB.
# There:  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#         PYTHONPATH=/tmp/site:. python3 -m bench.studies.gpu_study --data-dir DIR --out out/gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON_VERSION:-3.12}
mkdir -p .whl
platforms=()
for n in 2_28 2_27 2_17 2014 1; do
  case $n in 2014|1) platforms+=(--platform "manylinux${n}_x86_64");; *) platforms+=(--platform "manylinux_${n}_x86_64");; esac
done
# keras and its needs, hyperopt's needs the machine lacks, the store, the embedded server
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" \
  --implementation cp "${platforms[@]}" -d .whl \
  keras absl-py h5py ml-dtypes namex optree rich markdown-it-py mdurl pygments \
  hyperopt cloudpickle networkx pymongo dnspython nx-27017 neosqlite
du -sh .whl
