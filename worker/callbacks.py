"""Keras callbacks the worker adds to every trial (built lazily: TF loads after pinning)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def make_callbacks(
    stop: threading.Event, on_epoch: Callable[[int, dict[str, float]], None]
) -> list[Any]:
    import keras

    class StopOnSignal(keras.callbacks.Callback):
        """Ends training at the next batch once the worker is told to stop."""

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if stop.is_set():
                self.model.stop_training = True

    class LiveMetrics(keras.callbacks.Callback):
        """Writes each epoch's metrics to MongoDB as it ends, so progress is visible live."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._t0 = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            row = {k: float(v) for k, v in (logs or {}).items()}
            row["epoch_seconds"] = time.monotonic() - getattr(self, "_t0", time.monotonic())
            on_epoch(epoch + 1, row)

    return [StopOnSignal(), LiveMetrics()]
