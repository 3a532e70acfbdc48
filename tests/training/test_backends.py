"""Keras backends: the objective, a real worker study and export/reload on JAX, in
processes where TensorFlow cannot even be imported (as on a JAX-only machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("jax") is None, reason="jax is not installed"
)
NO_TF = str(ROOT / "tests" / "no_tensorflow")
PARAMS = {
    "num_blocks": 2,
    "block_size": 1,
    "fcl_num_layers": 1,
    "fcl_layer_size": 32,
    "fcl_dropout_rate": 0.2,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 32,
}


def _env(backend: str, **more: str) -> dict[str, str]:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": f"{NO_TF}:{ROOT}", **more}
    env.pop("STRIX_HOME", None)
    return env


def _python(code: str, env: dict[str, str], timeout: float = 600) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


TRIAL = """
import json, sys
from shared.training import backend
backend.select({backend!r})
backend.set_precision({precision!r})
from shared.data.cache import load
from shared.data.spec import DataSpec
from shared.training.loop import Budget, run_trial
data = load(DataSpec(image_size=28, limit=300, test_limit=100), data_dir={data!r},
            cache_dir={cache!r})
r = run_trial("convstrix", {params!r}, data=data, budget=Budget(1, 1))
print(json.dumps({{k: r.get(k) for k in ("status", "backend", "precision", "reason")}}
                 | {{"tf": "tensorflow" in sys.modules}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_the_objective_runs_on_jax_without_tensorflow(
    data_dir: Path, tmp_path: Path, precision: str
) -> None:
    code = TRIAL.format(
        backend="jax",
        precision=precision,
        data=str(data_dir),
        cache=str(tmp_path),
        params=PARAMS,
    )
    out = _python(code, _env("jax"))
    assert out == {
        "status": "ok",
        "backend": "jax",
        "precision": precision,
        "reason": None,
        "tf": False,
    }


EXPORT = """
import json, sys
import numpy as np
from shared.training import backend
backend.select({backend!r})
import keras
import shared.models
from shared.models import build_model
path = {path!r}
if {save!r}:
    model = build_model("convstrix", {params!r}, image_size=28, channels=1)
    model.save(path)
model = keras.models.load_model(path)
x = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
print(json.dumps({{"shape": list(model.predict(x, verbose=0).shape),
                  "tf": "tensorflow" in sys.modules}}))
"""


@pytest.mark.slow
def test_an_exported_model_reloads_on_every_backend(tmp_path: Path) -> None:
    path = str(tmp_path / "model.keras")
    saved = _python(EXPORT.format(backend="jax", path=path, save=True, params=PARAMS), _env("jax"))
    assert saved == {"shape": [4, 10], "tf": False}
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    loaded = _python(EXPORT.format(backend="tensorflow", path=path, save=False, params=PARAMS), env)
    assert loaded["shape"] == [4, 10]


@pytest.mark.slow
def test_a_study_finishes_on_jax_without_tensorflow(
    data_dir: Path, tmp_path: Path, mongo_url: str, db_name: str
) -> None:
    argv = [sys.executable, "-m", "coordinator.cli", "launch", "--model", "convstrix"]
    argv += ["--backend", "jax", "--local-workers", "1", "--max-evals", "2", "--image-size"]
    argv += ["28", "--max-epochs", "1", "--limit", "300", "--seed", "2", "--clamp"]
    argv += ["--mongo", mongo_url, "--db", db_name, "--exp-key", "on-jax", "--no-progress"]
    argv += ["--data-dir", str(data_dir), "--home", str(tmp_path)]
    res = subprocess.run(
        argv, cwd=ROOT, env=_env("jax"), capture_output=True, text=True, timeout=900
    )
    logs = "".join(p.read_text() for p in tmp_path.glob("logs/on-jax/*.log"))
    assert res.returncode == 0, res.stderr[-3000:] + logs[-3000:]
    assert "2 ok, 0 failed, 0 error" in res.stdout, res.stdout
    from shared.store import State, connect

    store = connect(mongo_url, db_name)
    docs = store.trials_in("on-jax", [State.DONE], ["result"])
    assert len(docs) == 2 and {d["result"]["backend"] for d in docs} == {"jax"}
    assert "No module named 'tensorflow'" not in logs


@pytest.mark.slow
def test_the_prepared_gpu_study_runs_on_cpu_with_the_gpu_parts_skipped(
    data_dir: Path, tmp_path: Path
) -> None:
    """bench/studies/gpu_study.py is Strix's real launch/worker/server path on JAX; on a machine
    without nvidia-smi it runs its smallest grid and says the GPU figures were skipped."""
    out = tmp_path / "gpu.json"
    argv = [sys.executable, "-m", "bench.studies.gpu_study", "--cpu", "--data-dir", str(data_dir)]
    res = subprocess.run(
        [*argv, "--out", str(out)],
        cwd=ROOT,
        env=_env("jax"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (cell,) = json.loads(out.read_text())["cells"]
    assert cell["ok"] == 2 and cell["trials_per_hour"] > 0 and cell["best_val_accuracy"] > 0
    if not __import__("shutil").which("nvidia-smi"):
        assert "GPU memory and utilisation skipped" in res.stdout
        assert cell["gpu_mem_peak_mib"] is None


@pytest.mark.slow
def test_the_prepared_gpu_pruning_bench_runs_on_cpu_in_smoke_mode(
    data_dir: Path, tmp_path: Path
) -> None:
    """scripts/gpu-pruning.sh runs issue 12's full benchmark the day a GPU is lent; its
    smoke mode is the same script and the same JAX path, cut to bench.studies.pruning --quick."""
    more = {"STRIX_GPU_SMOKE": "1", "STRIX_DATA_DIR": str(data_dir), "OUT": str(tmp_path)}
    more["TMPDIR"] = str(tmp_path)  # the bench's own work dir (server, cache) goes with the test
    res = subprocess.run(
        ["bash", "scripts/gpu-pruning.sh", "1", "asha"],
        cwd=ROOT,
        env=_env("jax", PYTHON=sys.executable, **more),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    (run,) = json.loads((tmp_path / "pruning-gpu-s1.json").read_text())["runs"]
    assert (run["pruner"], run["trials"], run["failed"]) == ("asha", 4, 0), run
    assert 0 < run["trial_epochs"] <= 4 * 3 and 0 < run["test_acc"] <= 1
