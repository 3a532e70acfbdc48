"""Fashion-MNIST pipeline on the real idx files: parsing, corruption, resizing, cache, split, CLI.

Caches go to tmp directories; sizes are 28/32 px so a full prepare takes about a second.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared.config import defaults, settings
from shared.data.cache import CV2_FLAGS, load, prepare, resize_images
from shared.data.idx import CLASS_NAMES, FILES, find_data_dir, load_raw, source_hash
from shared.data.spec import INTERPOLATIONS, DataSpec, small_validation_note
from shared.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]
SPEC32 = DataSpec(image_size=32)
STEMS = [stem for stem, _, _ in FILES.values()]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own STRIX_* settings must not leak into these tests."""
    monkeypatch.delenv(defaults.ENV_DATA_DIR, raising=False)
    monkeypatch.delenv(defaults.ENV_CACHE_DIR, raising=False)


@pytest.fixture(scope="module")
def raw(data_dir: Path) -> tuple[np.ndarray, ...]:
    return load_raw(data_dir)


@pytest.fixture(scope="module")
def plain_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uncompressed copy of the real files (the other layout load_raw accepts)."""
    out = tmp_path_factory.mktemp("plain")
    for stem in STEMS:
        (out / stem).write_bytes(gzip.decompress((data_dir / f"{stem}.gz").read_bytes()))
    return out


@pytest.fixture(scope="module")
def cache32(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cache root, prepared 32 px cubic 1-channel cache) shared by the read-only tests."""
    root = tmp_path_factory.mktemp("cache")
    return root, prepare(SPEC32, data_dir=data_dir, cache_dir=root)


def _copy_with(data_dir: Path, dest: Path, name: str, content: bytes | None) -> Path:
    """A data dir of symlinks to the real files, with ``name`` replaced (or removed)."""
    dest.mkdir(exist_ok=True)
    for stem in STEMS:
        (dest / f"{stem}.gz").symlink_to(data_dir / f"{stem}.gz")
    (dest / (name if name.endswith(".gz") else f"{name}.gz")).unlink()
    if content is not None:
        (dest / name).write_bytes(content)
    return dest


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


# --- loading and validation -------------------------------------------------------------


def test_real_files_parse_with_expected_shapes_and_balance(raw: tuple[np.ndarray, ...]) -> None:
    x_train, y_train, x_test, y_test = raw
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert all(a.dtype == np.uint8 for a in raw)
    assert np.bincount(y_train).tolist() == [6000] * len(CLASS_NAMES)
    assert np.bincount(y_test).tolist() == [1000] * len(CLASS_NAMES)
    assert x_train.min() == 0 and x_train.max() == 255
    # Not a constant or shuffled-garbage array: classes differ in mean brightness a lot.
    means = [x_train[y_train == c].mean() for c in range(10)]
    assert max(means) - min(means) > 30
    assert x_train.flags.writeable


def test_uncompressed_copy_loads_identically(raw: tuple, plain_dir: Path) -> None:
    plain = load_raw(plain_dir)
    assert all(np.array_equal(a, b) for a, b in zip(raw, plain, strict=True))
    assert source_hash(plain) == source_hash(raw)
    assert find_data_dir(plain_dir) == plain_dir


def test_find_data_dir_order(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The entry point resolves --data-dir / $STRIX_DATA_DIR; the library takes the result."""
    monkeypatch.setenv(defaults.ENV_DATA_DIR, str(data_dir))
    assert find_data_dir(settings.resolve({}, ["data_dir"])["data_dir"]) == data_dir
    assert find_data_dir(data_dir) == data_dir
    with pytest.raises(DataError, match="does not exist"):
        find_data_dir(tmp_path / "nope")  # explicit dir never falls through to the env var
    with pytest.raises(DataError, match=r"lacks train-images-idx3-ubyte\[\.gz\]"):
        find_data_dir(tmp_path)
    if not Path(defaults.DEBIAN_DATA_DIR).exists():
        assert find_data_dir() is None  # the library itself reads no environment variable


@pytest.mark.slow  # imports TensorFlow in a subprocess
def test_no_local_copy_falls_back_to_keras_or_explains(tmp_path: Path) -> None:
    """Offline this must be one DataError naming every place tried and every fix."""
    if Path(defaults.DEBIAN_DATA_DIR).exists():
        pytest.skip("the Debian package is installed, so the download fallback is never reached")
    env = {**os.environ, "HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / ".keras")}
    env.pop(defaults.ENV_DATA_DIR, None)
    code = (
        "from shared.data.idx import load_raw\nfrom shared.errors import DataError\n"
        "try:\n    print([a.shape for a in load_raw()])\n"
        "except DataError as e:\n    print('DataError:', e)\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired:
        pytest.skip("the keras download neither failed nor finished (filtered network)")
    out = proc.stdout.strip().splitlines()[-1]  # keras prints "Downloading data from ..." first
    assert proc.returncode == 0, proc.stderr[-2000:]
    if out.startswith("DataError:"):
        for needle in (f"${defaults.ENV_DATA_DIR} (not set)", defaults.DEBIAN_DATA_DIR):
            assert needle in out
        assert "keras" in out and "--data-dir" in out and "apt-get install" in out
    else:
        assert out == "[(60000, 28, 28), (60000,), (10000, 28, 28), (10000,)]"


def _corrupt_cases(data_dir: Path) -> dict[str, tuple[str, bytes | None, str]]:
    labels = gzip.decompress((data_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    images_gz = (data_dir / "t10k-images-idx3-ubyte.gz").read_bytes()
    images = gzip.decompress(images_gz)
    bad_label = bytearray(labels)
    bad_label[100] = 10
    bad_dims = bytearray(images)
    bad_dims[8:12] = (27).to_bytes(4, "big")
    return {
        "truncated gz": ("t10k-images-idx3-ubyte.gz", images_gz[: len(images_gz) // 2], "gzip"),
        "garbage gz": ("t10k-labels-idx1-ubyte.gz", os.urandom(4000), "gzip"),
        "truncated raw": ("t10k-labels-idx1-ubyte", labels[:-7], "expected 10000 data bytes"),
        "short header": ("t10k-labels-idx1-ubyte", labels[:5], "8-byte idx header"),
        "flipped magic": (
            "t10k-labels-idx1-ubyte",
            (2051).to_bytes(4, "big") + labels[4:],
            "expected magic number 2049, found 2051",
        ),
        "bad label": ("t10k-labels-idx1-ubyte", bytes(bad_label), "expected labels 0..9, found 10"),
        "bad dims": ("t10k-images-idx3-ubyte", bytes(bad_dims), "(10000, 27, 28)"),
        "trailing bytes": ("t10k-labels-idx1-ubyte", labels + b"\0", "found 10001"),
        "missing": ("train-labels-idx1-ubyte.gz", None, "lacks train-labels-idx1-ubyte"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "truncated gz",
        "garbage gz",
        "truncated raw",
        "short header",
        "flipped magic",
        "bad label",
        "bad dims",
        "trailing bytes",
        "missing",
    ],
)
def test_corrupt_copy_is_a_clear_data_error(data_dir: Path, tmp_path: Path, case: str) -> None:
    name, content, expected = _corrupt_cases(data_dir)[case]
    bad_dir = _copy_with(data_dir, tmp_path / "d", name, content)
    with pytest.raises(DataError) as info:
        load_raw(bad_dir)
    message = str(info.value)
    assert name.removesuffix(".gz") in message and expected in message, message
    assert "--data-dir" in message and "\n" not in message


# --- resizing ---------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", sorted(INTERPOLATIONS))
def test_resize_matches_opencv_reference(raw: tuple, interpolation: str) -> None:
    images = raw[0][:200]
    for size in (20, 32, 128):
        out = resize_images(images, size, interpolation)
        assert out.shape == (200, size, size, 1) and out.dtype == np.uint8
        flag = CV2_FLAGS[interpolation]
        reference = np.stack([cv2.resize(im, (size, size), interpolation=flag) for im in images])
        assert np.array_equal(out[..., 0], reference)


def test_area_downsample_of_upsample_is_faithful(raw: tuple) -> None:
    images = raw[0][:300]
    for interpolation, size, floor in (("nearest", 112, math.inf), ("area", 112, math.inf),
                                       ("cubic", 112, 28.0), ("cubic", 128, 27.0)):  # fmt: skip
        back = resize_images(resize_images(images, size, interpolation)[..., 0], 28, "area")
        assert _psnr(back[..., 0], images) >= floor, (interpolation, size)
    # The bound can fail: a one-pixel shift (the kind of bug visual checks catch) is far below.
    assert _psnr(np.roll(images, 1, axis=2), images) < 20


def test_cubic_overshoot_is_clipped_not_wrapped(raw: tuple) -> None:
    images = raw[0][:100]
    out = resize_images(images, 96, "cubic")[..., 0]
    exact = np.stack(
        [
            cv2.resize(im.astype(np.float32), (96, 96), interpolation=cv2.INTER_CUBIC)
            for im in images
        ]
    )
    assert exact.max() > 255 and exact.min() < 0  # cubic really overshoots on these images
    assert np.abs(out.astype(np.int16) - np.clip(np.rint(exact), 0, 255)).max() <= 1


def test_three_channels_are_gray_copies_and_28_is_identity(raw: tuple) -> None:
    images = raw[2][:50]
    rgb = resize_images(images, 40, "linear", channels=3)
    assert rgb.shape == (50, 40, 40, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert np.array_equal(rgb[..., 0], resize_images(images, 40, "linear")[..., 0])
    same = resize_images(images, 28)
    assert np.array_equal(same[..., 0], images)


def test_resize_rejects_bad_arguments(raw: tuple) -> None:
    images = raw[2][:5]
    with pytest.raises(ConfigError, match="interpolation"):
        resize_images(images, 32, "bicubic")
    with pytest.raises(ConfigError, match="channels"):
        resize_images(images, 32, channels=2)
    with pytest.raises(DataError, match="uint8"):
        resize_images(images.astype(np.float32), 32)


# --- spec -------------------------------------------------------------------------------


def test_spec_defaults_and_round_trip() -> None:
    spec = DataSpec()
    assert (spec.image_size, spec.channels, spec.interpolation) == (
        defaults.IMAGE_SIZE, defaults.CHANNELS, defaults.INTERPOLATION,
    )  # fmt: skip
    assert spec.validation_fraction == defaults.VALIDATION_FRACTION
    custom = DataSpec(image_size=64, channels=3, interpolation="area", limit=500, test_limit=100)
    assert DataSpec.from_dict(custom.to_dict()) == custom


@pytest.mark.parametrize(
    "bad",
    [
        {"image_size": 7}, {"image_size": 2000}, {"image_size": "128"}, {"image_size": True},
        {"channels": 2}, {"interpolation": "bicubic"}, {"validation_fraction": 0},
        {"validation_fraction": 1.0}, {"validation_fraction": "0.1"}, {"limit": 19},
        {"limit": 20}, {"limit": 70000}, {"test_limit": 5}, {"colour": "red"},
    ],
)  # fmt: skip
def test_spec_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ConfigError):
        DataSpec.from_dict(bad)


# --- cache ------------------------------------------------------------------------------


def test_prepare_writes_resized_uint8_and_reuses(raw: tuple, cache32: tuple, data_dir: Path):
    root, path = cache32
    assert path.parent == root and (path / "meta.json").is_file()
    x_test = np.load(path / "x_test.npy", mmap_mode="r")
    assert isinstance(x_test, np.memmap) and x_test.dtype == np.uint8
    assert np.array_equal(x_test, resize_images(raw[2], 32, "cubic"))
    assert json.loads((path / "meta.json").read_text())["source_hash"] == source_hash(raw)
    before = {f.name: f.stat().st_mtime_ns for f in path.iterdir()}
    time.sleep(0.01)
    assert prepare(SPEC32, data_dir=data_dir, cache_dir=root) == path
    assert {f.name: f.stat().st_mtime_ns for f in path.iterdir()} == before
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_uncompressed_copy_hits_the_same_cache(cache32: tuple, plain_dir: Path) -> None:
    root, path = cache32
    assert prepare(SPEC32, data_dir=plain_dir, cache_dir=root) == path


def test_cache_key_differs_by_size_interpolation_channels(data_dir: Path, cache32: tuple):
    specs = [DataSpec(image_size=28), DataSpec(image_size=28, channels=3)]
    specs += [DataSpec(image_size=28, interpolation="area"), SPEC32]
    paths = [prepare(s, data_dir=data_dir, cache_dir=cache32[0]) for s in specs]
    assert paths[-1] == cache32[1]
    assert len(set(paths)) == len(specs)
    rgb = np.load(paths[1] / "x_train.npy", mmap_mode="r")
    assert rgb.shape == (60000, 28, 28, 3)
    assert np.array_equal(rgb[..., 2], np.load(paths[0] / "x_train.npy")[..., 0])


def test_default_cache_dir_comes_from_env(data_dir: Path, tmp_path, monkeypatch, capsys) -> None:
    """``strix prepare`` resolves $STRIX_CACHE_DIR, then <$STRIX_HOME>/cache."""
    from shared.data.prepare import main as prepare_main

    monkeypatch.setenv(defaults.ENV_CACHE_DIR, str(tmp_path / "env-cache"))
    argv = ["--size", "28", "--data-dir", str(data_dir), "--no-progress"]
    assert prepare_main(argv) == 0
    assert capsys.readouterr().out.startswith(f"cache: {tmp_path / 'env-cache'}/")
    monkeypatch.delenv(defaults.ENV_CACHE_DIR)
    monkeypatch.setenv(defaults.ENV_HOME, str(tmp_path / "home"))
    assert prepare_main(argv) == 0
    assert capsys.readouterr().out.startswith(f"cache: {tmp_path / 'home' / 'cache'}/")


def test_unwritable_cache_is_a_data_error(data_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match="cannot create cache directory"):
        prepare(DataSpec(image_size=28), data_dir=data_dir, cache_dir=blocker / "cache")


DELAYS = (0.0, 0.0, 0.3)  # two start together; a third arrives while they are writing
RACER = """
import hashlib, sys, time
from pathlib import Path
import numpy as np
from shared.data.cache import prepare
from shared.data.spec import DataSpec
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.005)
time.sleep(float(sys.argv[5]))
path = prepare(DataSpec(image_size=32), data_dir=sys.argv[3], cache_dir=sys.argv[4])
# Read at once, while the other process may still be working: it must never see a torn cache.
x = np.load(path / "x_train.npy", mmap_mode="r")
print(path, hashlib.sha256(x.tobytes()).hexdigest())
"""


def test_two_processes_prepare_the_same_cache_at_once(data_dir: Path, tmp_path: Path, cache32):
    cache = tmp_path / "cache"
    procs = []
    for i, delay in enumerate(DELAYS):
        argv = [str(tmp_path / f"ready{i}"), str(tmp_path / "go"), str(data_dir), str(cache)]
        argv.append(str(delay))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RACER, *argv], stdout=subprocess.PIPE, text=True
            )
        )
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(len(DELAYS))):
        assert time.monotonic() < deadline, "racers never got ready"
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both start preparing within milliseconds of each other
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * len(DELAYS)
    reference = cache32[1]
    x_ref = np.load(reference / "x_train.npy", mmap_mode="r")
    ref_hash = hashlib.sha256(x_ref.tobytes()).hexdigest()
    for out in outs:
        assert out.split() == [outs[0].split()[0], ref_hash]
    raced = Path(outs[0].split()[0])
    assert [p.name for p in cache.iterdir()] == [raced.name]  # no temp dirs left behind
    for name in ("x_train", "y_train", "x_test", "y_test"):
        got = np.load(raced / f"{name}.npy", mmap_mode="r")
        assert np.array_equal(got, np.load(reference / f"{name}.npy", mmap_mode="r")), name


# --- split ------------------------------------------------------------------------------


def _rows(x: np.ndarray) -> Counter:
    return Counter(row.tobytes() for row in x.reshape(len(x), -1))


def test_full_split_is_stratified_and_test_untouched(cache32: tuple, data_dir: Path) -> None:
    root, path = cache32
    ds = load(SPEC32, data_dir=data_dir, cache_dir=root)
    assert ds.cache_path == path and len(ds.source_hash) == 64
    arrays = (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test)
    assert all(isinstance(a, np.memmap) for a in arrays)
    assert ds.x_train.shape == (54000, 32, 32, 1) and ds.x_val.shape == (6000, 32, 32, 1)
    assert np.bincount(ds.y_val).tolist() == [600] * 10
    assert np.bincount(ds.y_train).tolist() == [5400] * 10
    base_x = np.load(path / "x_train.npy", mmap_mode="r")
    assert _rows(ds.x_train) + _rows(ds.x_val) == _rows(base_x)  # a partition of train
    assert np.array_equal(ds.x_test, np.load(path / "x_test.npy"))
    assert np.array_equal(ds.y_test, np.load(path / "y_test.npy"))


def test_split_is_deterministic_per_seed_and_limits_work(cache32: tuple, data_dir: Path):
    root, path = cache32
    spec = DataSpec(image_size=32, limit=1000, test_limit=500, validation_fraction=0.2)
    first = load(spec, data_dir=data_dir, cache_dir=root)
    assert (len(first.y_train), len(first.y_val), len(first.y_test)) == (800, 200, 500)
    assert np.bincount(first.y_train).tolist() == [80] * 10
    assert np.bincount(first.y_val).tolist() == [20] * 10
    assert np.bincount(first.y_test).tolist() == [50] * 10
    assert not set(_rows(first.x_train)) & set(_rows(first.x_val))
    assert set(_rows(first.x_test)) <= set(_rows(np.load(path / "x_test.npy")))
    kept = {k: np.array(getattr(first, k)) for k in ("x_train", "y_val", "x_test")}
    shutil.rmtree(path / "splits")  # rebuilt from scratch, it must come out the same
    again = load(spec, data_dir=data_dir, cache_dir=root)
    assert all(np.array_equal(v, getattr(again, k)) for k, v in kept.items())
    other = load(DataSpec(**{**spec.to_dict(), "seed": 7}), data_dir=data_dir, cache_dir=root)
    assert not np.array_equal(other.x_train, kept["x_train"])


@pytest.mark.parametrize(
    ("limit", "fraction", "n_val", "sd"),
    [
        (2000, 0.1, 200, "±2.5 pp"),  # 100 * sqrt(0.85 * 0.15 / 200) = 2.52
        (300, 0.1, 30, "±6.5 pp"),
        (5000, 0.1, 500, "±1.6 pp"),
        (4000, 0.2, 800, "±1.3 pp"),
        (10000, 0.1, 1000, None),  # the pruning benchmark's set-up: no warning
        (None, 0.1, 6000, None),
    ],
)
def test_a_small_validation_split_is_warned_with_its_uncertainty(
    limit: int | None, fraction: float, n_val: int, sd: str | None
) -> None:
    spec = DataSpec(limit=limit, validation_fraction=fraction)
    assert spec.validation_size == n_val
    note = small_validation_note(spec)
    if sd is None:
        assert note is None
    else:
        assert note is not None and f"holds {n_val} images" in note and sd in note
        assert f"--limit {int(1000 / fraction)} or more" in note


# --- CLI --------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "shared.data", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_prepare_prints_path_and_size(data_dir: Path, tmp_path: Path) -> None:
    proc = _cli(
        "prepare", "--size", "32", "--data-dir", str(data_dir), "--cache-dir", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    path = Path(lines[0].removeprefix("cache: "))
    assert path.parent == tmp_path and (path / "meta.json").is_file()
    size = sum(f.stat().st_size for f in path.glob("*.npy")) / 1e6
    assert size > 70 and lines[1] == f"size: {size:.1f} MB"
    assert "60000/60000" in proc.stderr  # the progress bar ran


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--data-dir", "/nonexistent/fmnist"], "/nonexistent/fmnist"),
        (["--size", "4"], "[8, 1024]"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = _cli("prepare", "--cache-dir", str(tmp_path), *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("strix prepare: error: "), proc.stderr
    assert needle in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())


def test_cli_help_ends_with_examples() -> None:
    for args in ([], ["prepare"]):
        proc = _cli(*args, "--help")
        assert proc.returncode == 0
        tail = proc.stdout.split("examples:")[-1]
        assert "examples:" in proc.stdout and "python -m shared.data prepare --size" in tail
