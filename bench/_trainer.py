"""What one ``bench.train`` process measures: a compiled, warmed-up Keras model on real
or synthetic batches (:class:`Trainer`), and which backend and devices it ran on.

Keras is imported inside the functions, never at import time, so ``bench.train`` can set
``KERAS_BACKEND`` first.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from typing import Any

import numpy as np

POOL = {"real": 16, "synthetic": 25}  # distinct batches held in memory; steps cycle them
HEAD = {"fcl_num_layers": 2, "fcl_layer_size": 768, "fcl_dropout_rate": 0.3, "activation": "relu"}


def trial_params(suite: str, model: str, size: int) -> dict[str, Any]:
    """``real``: the builder's defaults; ``synthetic``: mid-range of the Part III space."""
    if suite == "real":
        return {}
    if model == "convstrix":
        from shared.spaces import max_blocks

        return {"num_blocks": min(4, max_blocks(size)), "block_size": 2, **HEAD}
    return {"conv": {"num_blocks": 1, "block_size": 2}, **HEAD}


def batches(
    suite: str, n: int, size: int, channels: int, data_dir: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images and labels: the first training images at ``size`` px (uint8, as the
    cache stores them), or random pixels as float32 holding uint8 values."""
    if suite == "synthetic":
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=(n, size, size, channels), dtype=np.uint8)
        return x.astype("float32"), rng.integers(0, 10, size=(n,), dtype=np.int32)
    from shared.data.cache import resize_images
    from shared.data.idx import load_raw

    x_train, y_train, _, _ = load_raw(data_dir)
    return resize_images(x_train[:n], size, "cubic", channels), y_train[:n].astype(np.int32)


class Trainer:
    """One compiled, warmed-up model and its batches, timed for ``steps`` steps on demand."""

    def __init__(
        self, suite: str, model: str, size: int, batch: int, warmup: int, data_dir: str | None
    ) -> None:
        import keras

        from shared.models import build_model, get_model

        self.suite, self.name, self.size, self.batch = suite, model, size, batch
        self.channels = get_model(model).channels
        self.params = trial_params(suite, model, size)
        self.model = build_model(
            model, self.params, image_size=size, channels=self.channels, weights=None
        )
        self.model.compile(
            optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        self.x, self.y = batches(suite, POOL[suite] * batch, size, self.channels, data_dir)
        self.keras = keras
        t0 = time.perf_counter()
        self._fit(max(1, warmup))
        self.warmup_s = time.perf_counter() - t0

    def _fit(self, steps: int) -> int:
        """``steps`` steps, cycling over the pool; returns the images trained on."""
        k = min(steps, POOL[self.suite])
        epochs, n = math.ceil(steps / k), k * self.batch
        self.model.fit(
            self.x[:n], self.y[:n], batch_size=self.batch, epochs=epochs, verbose=0, shuffle=False
        )
        return epochs * n

    def timed(self, steps: int) -> dict[str, Any]:
        start, t0 = time.time(), time.perf_counter()
        images = self._fit(steps)
        seconds = time.perf_counter() - t0
        return {
            "model": self.name,
            "size": self.size,
            "channels": self.channels,
            "batch": self.batch,
            "params": self.params,
            "param_count": int(self.model.count_params()),
            "steps": images // self.batch,
            "images": images,
            "warmup_s": self.warmup_s,
            "seconds": seconds,
            "images_per_s": images / seconds,
            "t_start": start,
            "t_end": start + seconds,
        }


def device_info(backend: str) -> tuple[dict[str, Any], int]:
    """Versions and devices for the synthetic JSON, and the number of GPUs Keras can use."""
    import keras

    info: dict[str, Any] = {"backend": backend, "keras": keras.__version__}
    gpus = 0
    if backend == "jax":
        import jax

        info |= {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}
        gpus = sum(d.platform == "gpu" for d in jax.devices())
    elif backend == "tensorflow":
        import tensorflow as tf

        found = tf.config.list_physical_devices("GPU")
        info |= {"tensorflow": tf.__version__, "devices": [d.name for d in found] or ["CPU"]}
        gpus = len(found)
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout
        info["nvidia_smi"] = out.strip().splitlines()[1:]
    return info, gpus
