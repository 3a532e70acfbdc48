"""Training batches read straight from memory-mapped arrays."""

from __future__ import annotations

import math

import keras
import numpy as np


class Batches(keras.utils.PyDataset):
    """Reads one batch at a time from uint8 images or float16 features (often memory-mapped).

    Why not ``model.fit(x, y)``: Keras would convert the whole split into one tensor, i.e.
    a private copy per worker process; slicing the memmap per batch lets the page cache be
    shared by all workers on a host, and the model casts uint8 to float on the device.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.x = x
        self.y = np.asarray(y, dtype=np.int32)
        self.batch_size = batch_size
        self._rng = np.random.default_rng(seed) if shuffle else None
        self._order = np.arange(len(x))
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        # Sorted indices read the memmap front to back; order inside a batch is irrelevant.
        idx = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
        return np.asarray(self.x[idx]), self.y[idx]

    def on_epoch_end(self) -> None:
        if self._rng is not None:
            self._rng.shuffle(self._order)
