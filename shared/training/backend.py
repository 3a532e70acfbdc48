"""Everything that differs between Keras's backends, in one place.

Strix's models, objective and export use ``keras.*`` only; what Keras does not abstract
lives here: telling an out-of-memory error from a bug, op determinism, the device's name,
and how several trials share one GPU's memory. Nothing here imports TensorFlow unless the
backend is TensorFlow, so a JAX or PyTorch worker runs without it installed.

The backend is chosen once, at the entry point, by :func:`select` (``--backend`` >
``KERAS_BACKEND`` > tensorflow), before anything imports Keras.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from shared.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT = "tensorflow"
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
_OOM_WORDS = ("out of memory", "resource_exhausted", "resource exhausted", "oom when allocating")


def select(name: str | None) -> str:
    """Pin the Keras backend for this process; must run before Keras is imported."""
    name = name or os.environ.get("KERAS_BACKEND") or DEFAULT
    if name not in BACKENDS:
        raise ConfigError(f"--backend {name!r} is unknown; choose one of: {', '.join(BACKENDS)}")
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[name]
    if importlib.util.find_spec(module) is None:
        extra = "" if name == DEFAULT else f" (pip install 'strix[{name}]')"
        raise ConfigError(f"--backend {name}: the {module} package is not installed{extra}")
    imported = _keras_backend_if_imported()
    if imported not in (None, name):
        raise ConfigError(f"Keras was already imported with the {imported} backend, not {name}")
    os.environ["KERAS_BACKEND"] = name
    if name == "jax":  # light trials share a GPU: no process may grab it all up front
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if name == "tensorflow":
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if name == "torch":  # return freed blocks to the GPU between trials on a shared device
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    return name


@contextlib.contextmanager
def _stderr_closed() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for a moment: C++ code writes there directly."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_quietly() -> None:
    """Import Keras (and TensorFlow) now, without the C++ start-up lines TensorFlow >= 2.16
    prints before its logging reads TF_CPP_MIN_LOG_LEVEL (oneDNN, CUDA drivers, cuInit).
    Only when the user asked for quiet (level >= 2, Strix's default); a failing import still
    raises its Python error."""
    if "keras" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") < "2":
        return
    with _stderr_closed():
        import keras

        keras.ops.convert_to_tensor([0.0])  # the first device use is where cuInit complains


def _keras_backend_if_imported() -> str | None:
    import sys

    keras = sys.modules.get("keras")
    return None if keras is None else keras.backend.backend()


def current() -> str:
    import keras

    return keras.backend.backend()


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` says the device (or host) ran out of memory, on any backend."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ in ("ResourceExhaustedError", "OutOfMemoryError"):
        return True
    text = str(exc).lower()
    return any(word in text for word in _OOM_WORDS) or " oom " in f" {text} "


def enable_determinism() -> None:
    """Deterministic kernels where the backend offers a switch (process-wide, sticky)."""
    name = current()
    if name == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif name == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
    # JAX on CPU is deterministic; on GPU set XLA_FLAGS=--xla_gpu_deterministic_ops=true


def device_name() -> str | None:
    """The accelerator's name for provenance, or None on a CPU."""
    name = current()
    try:
        if name == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
            return details.get("device_name") if gpus else None
        if name == "jax":
            import jax

            devices = [d for d in jax.devices() if d.platform != "cpu"]
            return devices[0].device_kind if devices else None
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as e:  # provenance must never fail an export
        log.debug("no device name: %s", e)
        return None


def set_precision(policy: str) -> None:
    """Keras's global dtype policy; Strix's heads keep their softmax in float32."""
    if policy not in PRECISIONS:
        raise ConfigError(f"--precision {policy!r}; choose one of: {', '.join(PRECISIONS)}")
    import keras

    keras.mixed_precision.set_global_policy(policy)


def versions() -> dict[str, Any]:
    """The versions of the backend packages that are installed, for provenance."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {}
    for package in ("keras", "tensorflow", "jax", "jaxlib", "torch"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out
