"""The Keras callbacks every Strix training run uses, as documented module-level classes.

Like Keras's own callbacks, each resets its state in ``on_train_begin``, so one instance
can serve several ``fit`` calls. :class:`EpochRecorder` is the one per-epoch recorder:
the trial's ``result.history``, the live ``metrics`` rows and the job's ``progress`` all
come from its rows (the worker passes a ``sink`` that writes the last two).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    from shared.training.pruning import Decision

NAN_CHECK_EVERY = 16  # batches; reading the loss forces a device sync, so not every batch
History = dict[str, list[float]]
EpochSink = Callable[[int, dict[str, float]], None]


class StopOnNonFinite(keras.callbacks.Callback):
    """TerminateOnNaN that also watches the validation loss, and syncs only every
    ``NAN_CHECK_EVERY`` batches so it costs nothing measurable."""

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if batch % NAN_CHECK_EVERY == 0:
            self._check(logs, ("loss",))

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._check(logs, ("loss", "val_loss"))

    def _check(self, logs: Mapping[str, Any] | None, keys: Sequence[str]) -> None:
        for key in keys:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                self.model.stop_training = True


class StopOnEvent(keras.callbacks.Callback):
    """Ends training at the next batch once ``event`` is set: how a worker that was told
    to stop (a signal, a lost trial) gets its GPU back within one batch."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.event.is_set():
            self.model.stop_training = True


class EpochRecorder(keras.callbacks.Callback):
    """Keeps every epoch's metrics and timing outside ``fit``, so a failed or stopped
    run still reports them, and hands each finished epoch to ``sink``.

    Values stay floats, NaN included: the store encodes non-finite numbers itself.
    """

    def __init__(self, sink: EpochSink | None = None) -> None:
        super().__init__()
        self.sink = sink
        self.costs: dict[str, Any] = {}  # what checkpointing cost, when the run saved any
        self.on_train_begin()

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.history: History = {}
        self.epoch_seconds: list[float] = []
        self.params_count: int | None = None
        self.started = time.perf_counter()
        self._epoch_start = self.started
        if getattr(self, "model", None) is not None:
            self.params_count = int(self.model.count_params())

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        row = {str(k): float(v) for k, v in (logs or {}).items()}
        for key, value in row.items():
            self.history.setdefault(key, []).append(value)
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
        if self.sink is not None:
            self.sink(epoch + 1, {**row, "epoch_seconds": self.epoch_seconds[-1]})

    @property
    def epochs(self) -> int:
        return len(self.epoch_seconds)

    def state(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.started
        return {"history": self.history, "epoch_seconds": self.epoch_seconds, "elapsed": elapsed}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue a checkpointed run: its epochs so far, and its training time."""
        self.history = {k: [float(v) for v in vs] for k, vs in state["history"].items()}
        self.epoch_seconds = [float(v) for v in state["epoch_seconds"]]
        self.started = time.perf_counter() - float(state["elapsed"])

    def summary(self) -> dict[str, Any]:
        """What every result carries, whatever the outcome."""
        return {
            "epochs": self.epochs,
            "history": self.history,
            "train_seconds": float(time.perf_counter() - self.started),
            "params_count": self.params_count,
            **self.costs,
        }


Judge = Callable[[int, float], "Decision | None"]  # (epoch, best val accuracy so far)


class PruneOnRung(keras.callbacks.Callback):
    """Asks ``judge`` after every epoch whether the trial should stop, with the trial's
    best validation accuracy so far; on a *prune* verdict it stops training and keeps the
    decision, which makes the trial's result a pruned one (see ``shared.training.loop``)."""

    def __init__(self, judge: Judge) -> None:
        super().__init__()
        self.judge = judge
        self.on_train_begin()

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.best = -math.inf
        self.decision: Decision | None = None

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        value = (logs or {}).get("val_accuracy")
        if value is None:
            return
        if math.isfinite(float(value)):  # a NaN epoch never lowers the best so far
            self.best = max(self.best, float(value))
        verdict = self.judge(epoch + 1, self.best)
        if verdict is not None and verdict.prune:
            self.decision = verdict
            self.model.stop_training = True

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "decision": self.decision.to_dict() if self.decision else None}

    def load_state(self, state: Mapping[str, Any]) -> None:
        from shared.training.pruning import Decision

        self.best = float(state["best"])
        d = state.get("decision")
        self.decision = None if d is None else Decision(**{**d, "compared": tuple(d["compared"])})

    def result(self, history: History) -> dict[str, Any]:
        """What a pruned trial's result says, status ``ok`` so TPE learns from it.

        Its loss is ``1 -`` the best val accuracy it reached: the value the pruner judged
        it by. Not the accuracy at its lowest val loss, as for a complete trial: a pruned
        trial's weights are never exported (``final`` retrains the best configuration),
        and ranking it by a number the pruner never looked at would be inconsistent.
        """
        accuracy = history["val_accuracy"]
        best = max(range(len(accuracy)), key=accuracy.__getitem__)  # first maximum
        decision = self.decision.to_dict() if self.decision is not None else {}
        return {
            "status": "ok",
            "loss": 1.0 - accuracy[best],
            "val_loss": history.get("val_loss", [math.nan] * len(accuracy))[best],
            "val_accuracy": accuracy[best],
            "best_epoch": best + 1,
            "max_val_accuracy": accuracy[best],
            "stopped_early": True,
            "pruned": True,
            "pruned_at_epoch": decision.get("epoch"),
            "pruning": decision,
        }


class KeptBest(keras.callbacks.EarlyStopping):
    """Keras's early stopping (restoring the best weights), whose state a checkpoint
    carries; ``hold`` skips the restore at the end of a ``fit`` that training continues
    after (the first part of an epoch resumed in its middle)."""

    hold = False

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if not self.hold:
            super().on_train_end(logs)

    def state(self) -> dict[str, Any]:
        keys = ("wait", "stopped_epoch", "best", "best_epoch", "best_weights")
        return {k: getattr(self, k) for k in keys}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.wait, self.stopped_epoch = int(state["wait"]), int(state["stopped_epoch"])
        self.best_epoch = int(state["best_epoch"])
        self.best = None if state["best"] is None else float(state["best"])
        weights = state.get("best_weights")
        self.best_weights = None if weights is None else list(weights)
