"""The frozen-base feature cache, on real Fashion-MNIST slices and real processes.

VGG19 with ``weights=None`` at 32 px stands in for the ImageNet weights (none offline):
the timings and the arithmetic are the same, only the accuracy is not.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.data.cache import load
from shared.data.features import features_for, list_caches, split, why_not
from shared.data.spec import DataSpec
from tests.helpers import ROOT

PARAMS = {
    "num_blocks": 1,
    "block_size": 1,
    "fcl_num_layers": 1,
    "fcl_layer_size": 32,
    "fcl_dropout_rate": 0.0,
}


@pytest.fixture(scope="module")
def data(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    spec = DataSpec(image_size=32, channels=3, limit=200, test_limit=100)
    return load(spec, data_dir=data_dir, cache_dir=tmp_path_factory.mktemp("cache"))


def _vgg():
    from shared.models import build_model

    return build_model("vggstrix", PARAMS, image_size=32, channels=3, weights=None)


def test_which_trials_can_use_the_cache() -> None:
    assert why_not("vggstrix", PARAMS) is None
    assert "augmentation (aug_flip)" in why_not("vggstrix", {**PARAMS, "aug_flip": 0.5})
    assert "no frozen pretrained base" in why_not("convstrix", {})
    assert "fine-tunes its base" in why_not("mobilenet", {})
    assert why_not("mobilenet_lite", {"freeze_base": True}) is None


@pytest.mark.slow
def test_the_cached_path_predicts_what_the_full_model_predicts(data, tmp_path: Path) -> None:
    model = _vgg()
    feats = features_for(model, "vggstrix", None, data, str(tmp_path))
    assert feats.x_train.dtype == np.float16 and len(feats.x_val) == len(data.y_val)
    _, head = split(model, "vgg19")
    assert [w.name for w in head.weights] == [w.name for w in model.weights[-len(head.weights) :]]
    front, _ = split(model, "vgg19")  # the test split through the cached path: float16
    test_features = np.asarray(front.predict(np.asarray(data.x_test), verbose=0), np.float16)
    x = np.concatenate([np.asarray(data.x_val), np.asarray(data.x_test)])
    full = model.predict(x, verbose=0)
    features = np.concatenate([np.asarray(feats.x_val), test_features]).astype(np.float32)
    cached = head.predict(features, verbose=0)
    agree = np.mean(full.argmax(1) == cached.argmax(1))
    assert agree >= 0.999, agree
    np.testing.assert_allclose(full, cached, atol=2e-2)  # float16 features
    again = features_for(_vgg(), "vggstrix", None, data, str(tmp_path))
    images = len(data.y_train) + len(data.y_val)
    assert again.path == feats.path and list_caches(str(tmp_path))[0]["images"] == images
    _strix_cache_ls_and_rm(tmp_path, feats.path.name)


def _strix_cache_ls_and_rm(cache: Path, name: str) -> None:
    from coordinator.caches import main

    res = subprocess.run(
        [sys.executable, "-m", "coordinator.caches", "ls", "--cache-dir", str(cache)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"features  {name}" in res.stdout
    assert main(["rm", name, "--cache-dir", str(cache)]) == 0
    assert not (cache / "features" / name).exists()


def _compute(cache: str, data_dir: str, out: mp.Queue) -> None:
    spec = DataSpec(image_size=32, channels=3, limit=200, test_limit=100)
    data = load(spec, data_dir=data_dir, cache_dir=cache)
    from shared.data import features

    calls = []
    original = features._build
    features._build = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    features.features_for(_vgg(), "vggstrix", None, data, cache)
    out.put(len(calls))


@pytest.mark.slow
def test_two_workers_compute_the_features_once(data_dir: Path, tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_compute, args=(str(tmp_path), str(data_dir), out)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    builds = sorted(out.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(60)
    assert builds == [0, 1], "one process computed, the other waited and read"


@pytest.mark.slow
def test_a_damaged_cache_is_detected_and_rebuilt(data, tmp_path: Path) -> None:
    feats = features_for(_vgg(), "vggstrix", None, data, str(tmp_path))
    path = feats.path / "x_val.npy"
    del feats
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])  # a partial file
    rebuilt = features_for(_vgg(), "vggstrix", None, data, str(tmp_path))
    assert len(rebuilt.x_val) == len(data.y_val)


def _launch_cfg(*argv: str):
    from coordinator import launch

    return launch.resolve(launch.build_parser().parse_args(["--model", "vggstrix", *argv]))


def test_the_resource_class_follows_the_cache_decision() -> None:
    cached = _launch_cfg("--image-size", "32", "--weights", "none")
    assert cached.feature_cache and cached.resource == "light"
    augmented = _launch_cfg("--image-size", "32", "--augment")
    assert not augmented.feature_cache and augmented.resource == "heavy"
    off = _launch_cfg("--image-size", "32", "--feature-cache", "off")
    assert not off.feature_cache and off.resource == "heavy"


@pytest.mark.slow
def test_a_cached_study_trains_light_and_final_exports_the_whole_model(
    data_dir: Path, tmp_path: Path, mongo_url: str, db_name: str
) -> None:
    import keras

    from shared.store import State, connect

    cli = [sys.executable, "-m", "coordinator.cli"]
    common = [
        "--mongo",
        mongo_url,
        "--db",
        db_name,
        "--exp-key",
        "vgg-cached",
        "--home",
        str(tmp_path),
        "--data-dir",
        str(data_dir),
    ]
    launch = [
        *cli,
        "launch",
        "--model",
        "vggstrix",
        "--image-size",
        "32",
        "--weights",
        "none",
        "--local-workers",
        "1",
        "--max-evals",
        "2",
        "--max-epochs",
        "1",
        "--limit",
        "300",
        "--seed",
        "3",
        "--pruner",
        "none",
        "--no-progress",
        *common,
    ]
    res = subprocess.run(launch, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    docs = connect(mongo_url, db_name).trials_in("vgg-cached", [State.DONE], ["result", "resource"])
    assert [d["resource"] for d in docs] == ["light", "light"]
    assert all(d["result"]["feature_cache"] for d in docs), [d["result"] for d in docs]
    caches = [p for p in (tmp_path / "cache" / "features").iterdir() if p.is_dir()]
    assert len(caches) == 1, "computed once"
    out = tmp_path / "final"
    final = [
        *cli,
        "final",
        "--epochs",
        "1",
        "--test-limit",
        "100",
        "--no-store",
        "--out",
        str(out),
        *common,
    ]
    res = subprocess.run(final, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    import shared.models  # noqa: F401 - registers Strix's layers for load_model

    model = keras.models.load_model(out / "model.keras")
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    assert model.predict(x, verbose=0).shape == (4, 10)


FULL_DISK_CHILD = """
import json, sys
from pathlib import Path
from shared.data.cache import load
from shared.data.spec import DataSpec
from shared.errors import DataError
from shared.data.features import features_for
from shared.models import build_model

full, data_dir, prepared, params = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
spec = DataSpec(image_size=32, channels=3, limit=200, test_limit=100)
data = load(spec, data_dir=data_dir, cache_dir=prepared)
model = build_model("vggstrix", params, image_size=32, channels=3, weights=None)
try:
    features_for(model, "vggstrix", None, data, full)
    error = None
except DataError as exc:
    error = str(exc)
left = sorted(str(p.relative_to(full)) for p in Path(full).rglob("*"))
from shared.data.features import _extract, split  # past the space check: the write itself
try:
    _extract(split(model, "vgg19")[0], data.x_train, Path(full) / "x.npy", False)
    errno = None
except OSError as exc:
    errno = exc.errno
print(json.dumps({"error": error, "left": left, "extract_errno": errno}))
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare")
def test_a_full_disk_during_extraction_is_one_clear_error_and_leaves_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    """A real full disk: a 64 KiB tmpfs, mounted in a private user+mount namespace, holds
    the cache; the features of 300 images (about 300 KiB) do not fit in it."""
    full = tmp_path / "full"
    full.mkdir()
    mount = 'mount -t tmpfs -o size=64k tmpfs "$0" && exec "$@"'
    child = [sys.executable, "-c", FULL_DISK_CHILD, str(full), str(data_dir)]
    child += [str(tmp_path / "prepared"), json.dumps(PARAMS)]
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", mount, str(full), *child],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 and "mount" in done.stderr and "tmpfs" in done.stderr:
        pytest.skip(f"this machine cannot mount a private tmpfs: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["error"] and "\n" not in out["error"], out
    assert "No space left on device" in out["error"] and "free disk space" in out["error"]
    partial = [p for p in out["left"] if p.endswith(".npy") or ".tmp-" in p or "vggstrix-" in p]
    assert partial == [] or all(p.endswith(".lock") for p in partial), out["left"]
    assert out["extract_errno"] == 28, "a write past the check fails as ENOSPC, not SIGBUS"
