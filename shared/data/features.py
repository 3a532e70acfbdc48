"""The frozen-base feature cache: a pretrained base's outputs, computed once per dataset.

VGGStrix's VGG19 (and a MobileNet with ``freeze_base``) never changes during a study, and
without augmentation neither do its inputs, so pushing every image through it at every
epoch of every trial is almost all of a trial's compute. Here the base runs once per
(model, base weights, image size, interpolation, channels, data split); its outputs are
stored as float16 ``.npy`` files that every trial on the host memory-maps, and each trial
trains only the layers after the base (:func:`split`), which are the full model's own
layers: the trained head drops back into the full model 1:1.

One process per host computes (a lock file), the others wait and then read; files are
written to a temp dir renamed into place, so a crash or a full disk leaves no partial
cache, and a damaged one is detected and rebuilt.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared import __version__
from shared.catalog import entry
from shared.data.cache import atomic_dir, cache_root
from shared.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import keras

    from shared.data.cache import Dataset

log = logging.getLogger(__name__)
# What trials and `final` train on. Test images are never read through the cache: `final`
# tests the whole exported model on raw images, so their features would be dead weight (at
# --limit 2000 the 10,000 test images were 5/6 of a trial's first-run extraction).
SPLITS = ("train", "val")
BATCH = 256
HEADROOM = 1 << 20  # HDF5 and .npy headers, meta.json: what the arrays' sizes leave out
AUG_KEYS = ("aug_crop", "aug_flip", "aug_rotate")


@dataclass(frozen=True)
class Features:
    """Memory-mapped float16 base outputs per split, and the base weights they came from."""

    x_train: np.ndarray
    x_val: np.ndarray
    base_weights: Path
    path: Path


def why_not(model: str, params: dict[str, Any]) -> str | None:
    """Why a trial cannot train on cached features, or None when it can."""
    if entry(model).base_layer is None:
        return f"{model} has no frozen pretrained base"
    if model.startswith("mobilenet") and not params.get("freeze_base"):
        return f"{model} fine-tunes its base (freeze_base is off)"
    on = [k for k in AUG_KEYS if float(params.get(k) or 0) > 0]
    if on:
        return f"augmentation ({', '.join(on)}) changes the base's input at every epoch"
    return None


def split(model: keras.Model, base_layer: str) -> tuple[keras.Model, keras.Model]:
    """(input -> base output, base output -> prediction), sharing the model's layers.

    The head re-applies the very layers that follow the base, so training it trains the
    full model, and its layer names are the full model's.
    """
    import keras

    base = model.get_layer(base_layer)
    after = model.layers[model.layers.index(base) + 1 :]
    cut = after[0].input  # the base's output as the model's graph sees it
    front = keras.Model(model.input, cut, name=f"{model.name}_base")
    x = features_in = keras.Input(shape=tuple(cut.shape[1:]), name="features")
    for layer in after:
        x = layer(x)
    return front, keras.Model(features_in, x, name=f"{model.name}_head")


def _weights_id(weights: str | None) -> str:
    if weights and Path(weights).is_file():
        return hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]
    return str(weights or "random")


def cache_key(model: str, weights: str | None, data: Dataset) -> str:
    fields = {
        "base": entry(model).base_layer,
        "weights": _weights_id(weights),
        "data": data.source_hash,
        "split": data.cache_path.name,
        "spec": data.spec.to_dict(),
        "strix": __version__,
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return f"{model}-{data.spec.image_size}px-{digest}"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process per host builds a cache; the others block here, then read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open(directory: Path, data: Dataset) -> Features | None:
    """The cache at ``directory`` if it is complete and matches ``data``; else None."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
        arrays = {s: np.load(directory / f"x_{s}.npy", mmap_mode="r") for s in SPLITS}
    except (OSError, ValueError) as exc:
        if directory.exists():
            log.warning("feature cache %s is damaged (%s); rebuilding it", directory, exc)
        return None
    sizes = {s: len(getattr(data, f"y_{s}")) for s in SPLITS}
    if any(len(arrays[s]) != sizes[s] or meta.get(f"n_{s}") != sizes[s] for s in SPLITS):
        log.warning("feature cache %s does not match its data; rebuilding it", directory)
        return None
    return Features(arrays["train"], arrays["val"], directory / "base.weights.h5", directory)


def _extract(front: keras.Model, images: np.ndarray, out: Path, progress: bool) -> None:
    shape = (len(images), *tuple(front.output.shape[1:]))
    stored = np.lib.format.open_memmap(out, mode="w+", dtype=np.float16, shape=shape)
    with open(out, "r+b") as handle:  # a sparse map that hits a full disk dies of SIGBUS
        os.posix_fallocate(handle.fileno(), 0, os.path.getsize(out))
    steps = range(0, len(images), BATCH)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"features {out.stem}", unit="batch", leave=False)
    for start in steps:
        batch = np.asarray(images[start : start + BATCH])
        stored[start : start + BATCH] = np.asarray(front.predict_on_batch(batch), np.float16)
    stored.flush()
    del stored


def _check_space(tmp: Path, front: keras.Model, base_layer: str, data: Dataset) -> None:
    """Refuse before computing: h5py crashes the process when the disk fills mid-write,
    and minutes of extraction should not end in a full disk."""
    images = sum(len(getattr(data, f"y_{s}")) for s in SPLITS)
    features = size_bytes(images, tuple(front.output.shape[1:]))
    weights = sum(math.prod(w.shape) * 4 for w in front.get_layer(base_layer).weights)
    need, free = features + weights + HEADROOM, shutil.disk_usage(tmp).free
    if need > free:
        mb = 1 << 20
        raise OSError(
            errno.ENOSPC,
            f"No space left on device: the features need {need / mb:.1f} MB, "
            f"{free / mb:.1f} MB free",
        )


def _build(tmp: Path, model: keras.Model, base_layer: str, data: Dataset, progress: bool) -> None:
    front, _ = split(model, base_layer)
    _check_space(tmp, front, base_layer, data)
    front.get_layer(base_layer).save_weights(tmp / "base.weights.h5")
    for s in SPLITS:
        _extract(front, getattr(data, f"x_{s}"), tmp / f"x_{s}.npy", progress)
    meta = {f"n_{s}": len(getattr(data, f"y_{s}")) for s in SPLITS}
    meta["feature_shape"] = list(front.output.shape[1:])
    (tmp / "meta.json").write_text(json.dumps({**meta, "strix": __version__}, indent=2))


def features_for(
    model: keras.Model,
    name: str,
    weights: str | None,
    data: Dataset,
    cache_dir: str | None,
    progress: bool = False,
) -> Features:
    """The cached base outputs for ``data``, computed now if no process has done it yet."""
    base_layer = entry(name).base_layer
    if base_layer is None:
        raise DataError(f"{name} has no frozen base to cache")
    target = cache_root(cache_dir) / "features" / cache_key(name, weights, data)
    found = _open(target, data)
    if found is not None:
        return found
    with _locked(target.with_suffix(".lock")):
        found = _open(target, data)  # another process may have built it while we waited
        if found is not None:
            return found
        if target.exists():
            import shutil

            shutil.rmtree(target)
        log.info(
            "computing %s features once for %s (%d images)",
            name,
            target.name,
            sum(len(getattr(data, f"y_{s}")) for s in SPLITS),
        )
        atomic_dir(target, lambda tmp: _build(tmp, model, base_layer, data, progress))
    found = _open(target, data)
    if found is None:
        raise DataError(f"the feature cache {target} could not be read back after writing it")
    return found


def size_bytes(n_images: int, feature_shape: tuple[int, ...]) -> int:
    """What a cache takes on disk: float16, one row per image (docs: 60,000 VGG19 rows of
    4x4x512 at 128 px are about 1 GB)."""
    return n_images * math.prod(feature_shape) * 2


def list_caches(cache_dir: str | None) -> list[dict[str, Any]]:
    """Every feature cache under ``cache_dir``: name, size, images."""
    root = cache_root(cache_dir) / "features"
    rows = []
    for meta_file in sorted(root.glob("*/meta.json")):
        meta = json.loads(meta_file.read_text())
        size = sum(f.stat().st_size for f in meta_file.parent.glob("*"))
        images = sum(meta.get(f"n_{s}", 0) for s in SPLITS)
        rows.append({"name": meta_file.parent.name, "images": images, "bytes": size})
    return rows
