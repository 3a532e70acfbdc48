"""Fashion-MNIST: find, validate, resize once, cache as uint8 .npy, memory-map, split.

Resizing 28 px images to e.g. 128 px is done once per (size, interpolation, channels,
source) and cached, because every trial on every worker needs the same arrays. The
cache is plain uint8 .npy read with ``mmap_mode="r"``, so all workers on a host share
the page cache instead of each holding its own copy; scaling to [0, 1] happens inside
the model (a Rescaling layer). OpenCV does the resizing, as in the seed: it is 2-3x
faster than ``tf.image.resize`` here and as faithful (PSNR within 0.2 dB; see
docs/benchmarks.md, which contradicts the seed's visual claim that Keras distorts them).
Splits are cached the same way,
so the training arrays handed to a worker are memory-mapped too.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from shared import __version__, defaults
from shared.errors import ConfigError, DataError

log = logging.getLogger(__name__)
PathArg = str | Path | None

CLASS_NAMES: tuple[str, ...] = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
INTERPOLATIONS: dict[str, int] = {
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
}
# array name -> (idx file stem, magic, expected count)
FILES: dict[str, tuple[str, int, int]] = {
    "x_train": ("train-images-idx3-ubyte", 2051, 60000),
    "y_train": ("train-labels-idx1-ubyte", 2049, 60000),
    "x_test": ("t10k-images-idx3-ubyte", 2051, 10000),
    "y_test": ("t10k-labels-idx1-ubyte", 2049, 10000),
}
SIDE = 28
CHUNK = 1024  # images per progress-bar step
FIX = (
    "fix: pass --data-dir DIR with the four idx files (.gz or uncompressed), "
    f"set {defaults.ENV_DATA_DIR}, or `apt-get install dataset-fashion-mnist`"
)


def _int_in(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _check_look(channels: object, interpolation: object) -> None:
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(
            f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}"
        )


@dataclass(frozen=True)
class DataSpec:
    """Everything that decides which arrays a trial sees; part of every job document."""

    image_size: int = defaults.IMAGE_SIZE
    channels: int = defaults.CHANNELS
    interpolation: str = defaults.INTERPOLATION
    validation_fraction: float = defaults.VALIDATION_FRACTION
    seed: int = defaults.SPLIT_SEED
    limit: int | None = None
    test_limit: int | None = None

    def __post_init__(self) -> None:
        _int_in("image_size", self.image_size, 8, 1024)
        _check_look(self.channels, self.interpolation)
        vf = self.validation_fraction
        if isinstance(vf, bool) or not isinstance(vf, int | float) or not 0 < vf < 1:
            raise ConfigError(f"validation_fraction must be a number in (0, 1), got {vf!r}")
        _int_in("seed", self.seed, 0, 2**32 - 1)
        if self.limit is not None:
            _int_in("limit", self.limit, 20, FILES["x_train"][2])
            n_val = int(np.ceil(vf * self.limit))
            if min(n_val, self.limit - n_val) < len(CLASS_NAMES):
                raise ConfigError(
                    f"limit={self.limit} with validation_fraction={vf} gives {n_val} "
                    f"validation and {self.limit - n_val} training images; both need at "
                    f"least {len(CLASS_NAMES)} (one per class): raise limit"
                )
        if self.test_limit is not None:
            _int_in("test_limit", self.test_limit, len(CLASS_NAMES), FILES["x_test"][2])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        if not isinstance(d, dict):
            raise ConfigError(f"a data spec must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown data spec keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)


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


# --- locating and parsing the idx files ------------------------------------------------


def _files_in(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The idx files present in ``directory`` (.gz preferred) and the names missing."""
    found, missing = {}, []
    for key, (stem, _, _) in FILES.items():
        for name in (f"{stem}.gz", stem):
            if (directory / name).is_file():
                found[key] = directory / name
                break
        else:
            missing.append(f"{stem}[.gz]")
    return found, missing


def _locate(data_dir: PathArg) -> tuple[dict[str, Path] | None, list[str]]:
    """First complete copy: the given dir (which must work), then the Debian package.

    The caller resolves ``--data-dir`` / ``$STRIX_DATA_DIR`` (shared.settings) and passes it.
    """
    if data_dir is not None:
        directory = Path(data_dir).expanduser()
        if not directory.is_dir():
            raise DataError(f"data directory {directory} does not exist; {FIX}")
        found, missing = _files_in(directory)
        if missing:
            raise DataError(f"data directory {directory} lacks {', '.join(missing)}; {FIX}")
        return found, [str(directory)]
    tried = ["--data-dir / $STRIX_DATA_DIR (not set)"]
    found, missing = _files_in(Path(defaults.DEBIAN_DATA_DIR))
    if not missing:
        return found, tried
    if len(missing) < len(FILES):
        log.warning("%s is incomplete: missing %s", defaults.DEBIAN_DATA_DIR, ", ".join(missing))
    detail = "no idx files" if len(missing) == len(FILES) else f"missing {', '.join(missing)}"
    return None, [*tried, f"{defaults.DEBIAN_DATA_DIR} ({detail})"]


def find_data_dir(data_dir: PathArg = None) -> Path | None:
    """Directory of a complete local copy, or None when only a download could help."""
    found, _ = _locate(data_dir)
    return None if found is None else found["y_train"].parent


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path} is missing; {FIX}") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path} is not a readable {'gzip' if path.suffix == '.gz' else 'idx'} file "
            f"({exc}); expected an intact Fashion-MNIST file: re-download it; {FIX}"
        ) from exc


def _parse_idx(path: Path, key: str) -> np.ndarray:
    """Parse one idx file and check it is exactly the Fashion-MNIST file it claims to be."""
    _, magic, count = FILES[key]
    raw = _read_bytes(path)
    ndim = 3 if magic == 2051 else 1
    header = 4 + 4 * ndim

    def bad(what: str) -> DataError:
        return DataError(f"{path}: {what}; the file is corrupt or not {FILES[key][0]}; {FIX}")

    if len(raw) < header:
        raise bad(f"expected a {header}-byte idx header, found only {len(raw)} bytes")
    found_magic = int.from_bytes(raw[:4], "big")
    if found_magic != magic:
        raise bad(f"expected magic number {magic}, found {found_magic}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = (count, SIDE, SIDE)[:ndim]
    if dims != expected:
        raise bad(f"expected dimensions {expected}, found {dims}")
    payload = len(raw) - header
    if payload != int(np.prod(dims)):
        raise bad(f"expected {int(np.prod(dims))} data bytes after the header, found {payload}")
    array = np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()
    if ndim == 1 and array.max() >= len(CLASS_NAMES):
        raise bad(f"expected labels 0..9, found {int(array.max())}")
    return array


def _load_keras(tried: list[str]) -> tuple[np.ndarray, ...]:
    """Last resort when online; the error lists every place looked at."""
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as exc:
        raise DataError(
            f"Fashion-MNIST not found: tried {'; '.join(tried)}; keras download failed "
            f"({type(exc).__name__}: {exc}); {FIX}"
        ) from exc
    arrays = (x_train, y_train, x_test, y_test)
    for key, array in zip(FILES, arrays, strict=True):
        shape = (FILES[key][2], SIDE, SIDE)[: array.ndim]
        if array.shape != shape or array.dtype != np.uint8:
            raise DataError(f"keras returned {key} {array.shape} {array.dtype}, expected {shape}")
    return arrays


def load_raw(data_dir: PathArg = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) as uint8, images 28x28 without a channel axis."""
    found, tried = _locate(data_dir)
    if found is None:
        return _load_keras(tried)
    return tuple(_parse_idx(found[key], key) for key in FILES)  # type: ignore[return-value]


def source_hash(arrays: tuple[np.ndarray, ...]) -> str:
    """sha256 over the decompressed bytes, so .gz and raw copies share one cache."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# --- resizing ----------------------------------------------------------------------------


def _resize_into(
    out: np.ndarray, images: np.ndarray, interpolation: str, progress: bool, desc: str = ""
) -> None:
    """One image per cv2 call: batching along channels changes cubic's rounding."""
    flag, size = INTERPOLATIONS[interpolation], out.shape[1]
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
    _int_in("size", size, 1, 4096)
    _check_look(channels, interpolation)
    out = np.empty((len(images), size, size, channels), np.uint8)
    _resize_into(out, images, interpolation, progress=False)
    return out


# --- cache -------------------------------------------------------------------------------


def _cache_root(cache_dir: PathArg) -> Path:
    """The caller resolves --cache-dir / $STRIX_CACHE_DIR; this is only the last resort."""
    return Path(cache_dir or "~/.strix/cache").expanduser()


def _atomic_dir(target: Path, build: Callable[[Path], None]) -> Path:
    """Build in a sibling temp dir, then rename: readers never see a half-written cache."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as exc:
        raise DataError(
            f"cannot create cache directory {target.parent} ({exc}); "
            f"pass --cache-dir or set {defaults.ENV_CACHE_DIR} to a writable place"
        ) from exc
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "meta.json").is_file():
                raise
            log.info("another process finished %s first; using its copy", target)
    except OSError as exc:
        raise DataError(
            f"cannot write cache {target} ({exc}); free disk space, or pass --cache-dir "
            f"or set {defaults.ENV_CACHE_DIR} elsewhere"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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
    target = _cache_root(cache_dir) / name
    if (target / "meta.json").is_file():
        log.debug("reusing cache %s", target)
        return target
    log.info("preparing %s", target)
    return _atomic_dir(target, lambda tmp: _build_base(tmp, raw, spec, digest, progress))


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
        _atomic_dir(split, lambda tmp: _build_split(tmp, base, spec))
    meta = json.loads((base / "meta.json").read_text())
    arrays = {
        k: _open(split, k) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    }
    return Dataset(**arrays, spec=spec, source_hash=meta["source_hash"], cache_path=base)


# --- CLI ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m shared.data prepare ...``: the old spelling of ``strix prepare``."""

    from shared.prepare import main as prepare_main

    args = list(sys.argv[1:] if argv is None else argv)
    return prepare_main(args[1:] if args[:1] == ["prepare"] else args)


if __name__ == "__main__":
    raise SystemExit(main())
