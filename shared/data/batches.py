"""Training batches read straight from memory-mapped arrays."""

from __future__ import annotations

import math
from typing import Any

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
        self._pending: dict[str, Any] | None = None
        self.offset = 0  # batches of the epoch skipped (a view resumed in the middle)
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        # Sorted indices read the memmap front to back; order inside a batch is irrelevant.
        idx = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
        return np.asarray(self.x[idx]), self.y[idx]

    @property
    def total(self) -> int:
        """Batches in a whole epoch (``len`` of a resumed view counts only the rest)."""
        return len(self)

    def on_epoch_end(self) -> None:
        if self._pending is not None:  # Keras 3's fit calls this once before epoch 1
            self._apply(self._pending)
            self._pending = None
        elif self._rng is not None:
            self._rng.shuffle(self._order)

    def state(self) -> dict[str, Any]:
        """The current epoch's order and the generator that makes the next ones."""
        rng = None if self._rng is None else self._rng.bit_generator.state
        return {"order": self._order.copy(), "rng": rng}

    def restore(self, state: dict[str, Any]) -> None:
        """Serve the epoch ``state`` was taken in, now and after fit's first reset."""
        self._apply(state)
        self._pending = state

    def _apply(self, state: dict[str, Any]) -> None:
        self._order = np.asarray(state["order"]).copy()
        if self._rng is not None and state.get("rng") is not None:
            self._rng.bit_generator.state = _ints(state["rng"])

    def rest_of_epoch(self, done: int) -> Remainder:
        """A dataset of this epoch's batches after the first ``done`` (a resumed epoch)."""
        return Remainder(self, done)


def _ints(state: Any) -> Any:
    """A generator state back from JSON (numbers stay numbers, dicts stay dicts)."""
    if isinstance(state, dict):
        return {k: _ints(v) for k, v in state.items()}
    return int(state) if isinstance(state, float) and state.is_integer() else state


class Remainder(keras.utils.PyDataset):
    """The last batches of one epoch of ``parent``, for the epoch a trial resumes in; its
    end advances the parent to the next epoch's order, as a whole epoch would."""

    def __init__(self, parent: Batches, done: int) -> None:
        super().__init__()
        self.parent, self.offset, self._reset_seen = parent, int(done), False

    @property
    def total(self) -> int:
        return len(self.parent)

    def __len__(self) -> int:
        return len(self.parent) - self.offset

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.parent[index + self.offset]

    def on_epoch_end(self) -> None:
        if self._reset_seen:  # the first call is fit's reset, before the epoch
            self.parent.on_epoch_end()
        self._reset_seen = True
