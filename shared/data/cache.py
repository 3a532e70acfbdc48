"""The prepared-data cache: Fashion-MNIST resized once, stored as uint8 .npy, memory-mapped.

Resizing 28 px images to e.g. 128 px is done once per (size, interpolation, channels,
source) and cached, because every trial on every worker needs the same arrays. The
cache is plain uint8 .npy read with ``mmap_mode="r"``, so all workers on a host share
the page cache instead of each holding its own copy; scaling to [0, 1] happens inside
the model (a Rescaling layer). OpenCV does the resizing, as in the seed: it is 2-3x
faster than ``tf.image.resize`` here and as faithful (PSNR within 0.2 dB; see
docs/benchmarks.md, which contradicts the seed's visual claim that Keras distorts them).
Splits are cached the same way, so the training arrays handed to a worker are
memory-mapped too. Every write goes to a temp directory renamed into place, so two
processes preparing the same cache at once both end up with one intact copy.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from shared import __version__
from shared.config import defaults
from shared.data.idx import FILES, PathArg, load_raw, source_hash
from shared.data.spec import INTERPOLATIONS, DataSpec, check_int, check_look
from shared.errors import DataError

log = logging.getLogger(__name__)

CV2_FLAGS: dict[str, int] = {name: getattr(cv2, f"INTER_{name.upper()}") for name in INTERPOLATIONS}
CHUNK = 1024  # images per progress-bar step
ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Memory-mapped uint8 images (N, H, W, C) and int64 labels (N,)."""

    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_val: np.ndarray = field(repr=False)
    y_val: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    spec: DataSpec
    source_hash: str
    cache_path: Path


# --- resizing ----------------------------------------------------------------------------


def _resize_into(
    out: np.ndarray, images: np.ndarray, interpolation: str, progress: bool, desc: str = ""
) -> None:
    """One image per cv2 call: batching along channels changes cubic's rounding."""
    flag, size = CV2_FLAGS[interpolation], out.shape[1]
    same = images.shape[1:] == (size, size)
    with tqdm(total=len(images), unit="img", disable=not progress, desc=desc) as bar:
        for start in range(0, len(images), CHUNK):
            chunk = images[start : start + CHUNK]
            if same:
                resized = np.asarray(chunk)
            else:
                # uint8 in -> uint8 out: OpenCV saturates cubic's overshoot to 0..255.
                resized = np.stack(
                    [cv2.resize(im, (size, size), interpolation=flag) for im in chunk]
                )
            out[start : start + len(chunk)] = resized[..., None]  # broadcasts to C channels
            bar.update(len(chunk))


def resize_images(
    images: np.ndarray, size: int, interpolation: str = "cubic", channels: int = 1
) -> np.ndarray:
    """(N, H, W) uint8 -> (N, size, size, channels) uint8; 3 channels repeat the gray."""
    if not isinstance(images, np.ndarray) or images.ndim != 3 or images.dtype != np.uint8:
        got = getattr(images, "shape", type(images).__name__), getattr(images, "dtype", "")
        raise DataError(f"resize_images expects a uint8 array (N, H, W), got {got}")
    check_int("size", size, 1, 4096)
    check_look(channels, interpolation)
    out = np.empty((len(images), size, size, channels), np.uint8)
    _resize_into(out, images, interpolation, progress=False)
    return out


# --- writing the cache -------------------------------------------------------------------


def cache_root(cache_dir: PathArg) -> Path:
    """The caller resolves --cache-dir / $STRIX_CACHE_DIR; this is only the last resort."""
    return Path(cache_dir or "~/.strix/cache").expanduser()


def _unwritable(what: str, path: Path, exc: OSError, fix: str) -> DataError:
    return DataError(
        f"cannot {what} {path} ({exc}); {fix}pass --cache-dir or set "
        f"{defaults.ENV_CACHE_DIR} to a writable place"
    )


BUILDING = ".building"  # inside a temp dir: flock-ed by the process building it
STALE_UNLOCKED_S = 3600.0  # a temp dir without a lock file (a crash right after mkdtemp)


def atomic_dir(target: Path, build: Callable[[Path], None]) -> Path:
    """Build in a sibling temp dir, then rename: readers never see a half-written cache.

    The builder holds an flock on the temp dir's ``.building`` file while it builds; the
    kernel drops it when the builder dies (even by SIGKILL), which is how
    :func:`sweep_stale` tells a dead build's leftovers from a live one.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        lock = open(tmp / BUILDING, "w")  # noqa: SIM115 - held until the rename
        fcntl.flock(lock, fcntl.LOCK_EX)
    except OSError as exc:
        raise _unwritable("create cache directory", target.parent, exc, "") from exc
    try:
        build(tmp)
        (tmp / BUILDING).unlink()
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "meta.json").is_file():
                raise
            log.info("another process finished %s first; using its copy", target)
    except OSError as exc:
        raise _unwritable("write cache", target, exc, "free disk space, or ") from exc
    finally:
        lock.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def sweep_stale(cache_dir: PathArg) -> list[Path]:
    """Remove the temp dirs of builds that died (a SIGKILL mid-build leaves up to 1 GB):
    those whose ``.building`` lock no live process holds. Run at a process's start."""
    root, removed = cache_root(cache_dir), []
    try:
        found = [p for p in root.rglob(".*.tmp-*") if p.is_dir()] if root.is_dir() else []
    except OSError as e:
        log.warning("could not look for stale temp dirs in %s (%s)", root, e)
        return removed
    for tmp in found:
        if _build_is_dead(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
            log.info("removed %s, left by a build that died", tmp)
    return removed


def _build_is_dead(tmp: Path) -> bool:
    try:
        fd = os.open(tmp / BUILDING, os.O_RDWR)  # never created here: absent means absent
    except FileNotFoundError:  # built before locks existed, or a crash just after mkdtemp
        try:
            return time.time() - tmp.stat().st_mtime > STALE_UNLOCKED_S
        except OSError:
            return False
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True  # nobody holds it: its builder is gone
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _write_meta(directory: Path, meta: dict) -> None:
    meta = {**meta, "strix": __version__}
    (directory / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def _build_base(tmp: Path, raw: tuple, spec: DataSpec, digest: str, progress: bool) -> None:
    shape = (spec.image_size, spec.image_size, spec.channels)
    for key, array in zip(FILES, raw, strict=True):
        if key.startswith("y"):
            np.save(tmp / f"{key}.npy", array.astype(np.int64))
            continue
        out = np.lib.format.open_memmap(tmp / f"{key}.npy", "w+", np.uint8, (len(array), *shape))
        _resize_into(out, array, spec.interpolation, progress, desc=key)
        out.flush()
    keys = ("image_size", "interpolation", "channels")
    _write_meta(tmp, {**{k: getattr(spec, k) for k in keys}, "source_hash": digest})


def prepare(
    spec: DataSpec, *, data_dir: PathArg = None, cache_dir: PathArg = None, progress: bool = False
) -> Path:
    """Resized full train/test arrays in the cache; reused when already there."""
    raw = load_raw(data_dir)
    digest = source_hash(raw)
    name = f"fmnist-{spec.image_size}px-{spec.interpolation}-c{spec.channels}-{digest[:16]}"
    target = cache_root(cache_dir) / name
    if (target / "meta.json").is_file():
        log.debug("reusing cache %s", target)
        return target
    log.info("preparing %s", target)
    return atomic_dir(target, lambda tmp: _build_base(tmp, raw, spec, digest, progress))


# --- splits ------------------------------------------------------------------------------


def _open(directory: Path, key: str) -> np.ndarray:
    try:
        return np.load(directory / f"{key}.npy", mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cache file {directory / key}.npy is unreadable ({exc}); delete {directory} "
            "and run `python -m shared.data prepare` again"
        ) from exc


def _stratified(idx: np.ndarray, y: np.ndarray, seed: int, **size: float) -> list[np.ndarray]:
    """Sorted halves of a stratified split; sklearn is imported here as it is slow to import."""
    from sklearn.model_selection import train_test_split

    return [np.sort(part) for part in train_test_split(idx, stratify=y, random_state=seed, **size)]


def _subset(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices of a stratified subset of n items (all when n is None or not smaller)."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    return _stratified(np.arange(len(y)), y, seed, train_size=n)[0]


def _gather(tmp: Path, name: str, src: np.ndarray, idx: np.ndarray) -> None:
    """Copy src[idx] into a .npy chunk by chunk, so 128 px data never sits in RAM twice."""
    out = np.lib.format.open_memmap(
        tmp / f"{name}.npy", "w+", src.dtype, (len(idx), *src.shape[1:])
    )
    for start in range(0, len(idx), CHUNK):
        out[start : start + CHUNK] = src[idx[start : start + CHUNK]]
    out.flush()


def _build_split(tmp: Path, base: Path, spec: DataSpec) -> None:
    y_train = _open(base, "y_train")
    pool = _subset(y_train, spec.limit, spec.seed)
    train, val = _stratified(pool, y_train[pool], spec.seed, test_size=spec.validation_fraction)
    x_train = _open(base, "x_train")
    for suffix, idx in (("train", train), ("val", val)):
        _gather(tmp, f"x_{suffix}", x_train, idx)
        _gather(tmp, f"y_{suffix}", y_train, idx)
    y_test = _open(base, "y_test")
    test = _subset(y_test, spec.test_limit, spec.seed)
    _gather(tmp, "x_test", _open(base, "x_test"), test)
    _gather(tmp, "y_test", y_test, test)
    _write_meta(tmp, spec.to_dict())


def load(
    spec: DataSpec, *, data_dir: PathArg = None, cache_dir: PathArg = None, progress: bool = False
) -> Dataset:
    """Prepare if needed, then memory-map a cached stratified train/validation split."""
    base = prepare(spec, data_dir=data_dir, cache_dir=cache_dir, progress=progress)
    s = spec
    name = f"val{s.validation_fraction:g}-seed{s.seed}-n{s.limit or 'all'}-t{s.test_limit or 'all'}"
    split = base / "splits" / name
    if not (split / "meta.json").is_file():
        atomic_dir(split, lambda tmp: _build_split(tmp, base, spec))
    meta = json.loads((base / "meta.json").read_text())
    arrays = {k: _open(split, k) for k in ARRAYS}
    return Dataset(**arrays, spec=spec, source_hash=meta["source_hash"], cache_path=base)
