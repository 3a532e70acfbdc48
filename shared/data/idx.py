"""The Fashion-MNIST idx files: where a complete copy is, what each file must hold, and
the hash that names the copy.

Needs numpy only (keras is imported for the download fallback alone). The entry points
resolve ``--data-dir`` / ``$STRIX_DATA_DIR`` (:mod:`shared.config.settings`) and pass the result.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from pathlib import Path

import numpy as np

from shared.config import defaults
from shared.errors import DataError

log = logging.getLogger(__name__)
PathArg = str | Path | None

CLASS_NAMES: tuple[str, ...] = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
# array name -> (idx file stem, magic, expected count)
FILES: dict[str, tuple[str, int, int]] = {
    "x_train": ("train-images-idx3-ubyte", 2051, 60000),
    "y_train": ("train-labels-idx1-ubyte", 2049, 60000),
    "x_test": ("t10k-images-idx3-ubyte", 2051, 10000),
    "y_test": ("t10k-labels-idx1-ubyte", 2049, 10000),
}
SIDE = 28
FIX = (
    "fix: pass --data-dir DIR with the four idx files (.gz or uncompressed), "
    f"set {defaults.ENV_DATA_DIR}, or `apt-get install dataset-fashion-mnist`"
)


# --- locating ----------------------------------------------------------------------------


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
    """First complete copy: the given dir (which must work), then the Debian package."""
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


# --- parsing -----------------------------------------------------------------------------


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


def _check_header(raw: bytes, key: str) -> tuple[int, ...] | str:
    """The dimensions the header declares, or what is wrong with the file."""
    _, magic, count = FILES[key]
    ndim = 3 if magic == 2051 else 1
    header = 4 + 4 * ndim
    if len(raw) < header:
        return f"expected a {header}-byte idx header, found only {len(raw)} bytes"
    found_magic = int.from_bytes(raw[:4], "big")
    if found_magic != magic:
        return f"expected magic number {magic}, found {found_magic}"
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = (count, SIDE, SIDE)[:ndim]
    if dims != expected:
        return f"expected dimensions {expected}, found {dims}"
    payload = len(raw) - header
    if payload != int(np.prod(dims)):
        return f"expected {int(np.prod(dims))} data bytes after the header, found {payload}"
    return dims


def _parse_idx(path: Path, key: str) -> np.ndarray:
    """Parse one idx file and check it is exactly the Fashion-MNIST file it claims to be."""
    raw = _read_bytes(path)
    dims = _check_header(raw, key)
    problem = dims if isinstance(dims, str) else None
    if problem is None:
        array = np.frombuffer(raw, np.uint8, offset=4 + 4 * len(dims))
        array = array.reshape(dims).copy()
        if array.ndim == 1 and array.max() >= len(CLASS_NAMES):
            problem = f"expected labels 0..9, found {int(array.max())}"
    if problem is not None:
        raise DataError(f"{path}: {problem}; the file is corrupt or not {FILES[key][0]}; {FIX}")
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
