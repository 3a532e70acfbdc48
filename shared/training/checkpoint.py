"""What a trial saves so that it can continue exactly where it stopped, on any worker.

A :class:`Snapshot` holds everything the next epoch depends on: the weights (every model
variable, the dropout layers' seed states included), the optimizer's variables, the
position (``epoch`` to run next and ``batch`` of it already trained), the state of each
stateful callback (the recorder's history, early stopping's best value, wait and best
weights, the pruner's best so far), the training batches' shuffle order and generator,
the global random generators, and, for a position inside an epoch, the running means of
the training metrics so far. A resumed trial therefore produces the same epoch history
as an uninterrupted one with the same seed.

It is serialised without pickle (``np.savez`` of plain arrays plus one JSON document),
so loading a checkpoint can never run code. Where it is stored is the worker's business
(:class:`Vault`); this module only captures, encodes, decodes and restores.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import keras
import numpy as np

FORMAT = 1
_META = "__meta__"
MAX_SHARE = 0.05  # of training time spent saving checkpoints, except those a stop asks for


class Preempted(InterruptedError):
    """Raised out of ``fit`` once the checkpoint a stop request asked for is saved: the
    interrupted epoch then ends without any callback recording half of it."""


class Vault(Protocol):
    """Where one trial's checkpoints live (the worker's GridFS or directory store)."""

    interval_s: float  # the longest a trial trains between two checkpoints inside an epoch

    def load(self) -> bytes | None:
        """The trial's latest checkpoint, or None when it starts from scratch."""

    def save(self, blob: bytes, epoch: int, batch: int) -> bool:
        """Store ``blob`` as the latest checkpoint; False when the trial is no longer ours."""


class Stateful(Protocol):
    """A callback whose state a checkpoint carries (see ``shared.training.callbacks``)."""

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: Mapping[str, Any]) -> None: ...


@dataclass
class Snapshot:
    """One checkpoint, in memory."""

    epoch: int  # 0-based epoch to run next
    batch: int  # batches of ``epoch`` already trained (0 at an epoch boundary)
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    callbacks: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # Batches.state()
    rng: dict[str, Any] = field(default_factory=dict)
    partial: dict[str, float] = field(default_factory=dict)  # running train means at ``batch``
    resumes: int = 0
    epochs_lost: float = 0.0
    saved: float = 0.0

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.batch


# --- encoding: plain arrays + JSON, never pickle ----------------------------------------


def _split(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` with every array replaced by a reference into ``arrays``."""
    if isinstance(value, np.ndarray | np.generic) and not isinstance(value, np.bool_):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(value)
        return {"__array__": key}
    if isinstance(value, Mapping):
        return {str(k): _split(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split(v, arrays) for v in value]
    if isinstance(value, float) and value != value:
        return {"__nan__": True}  # JSON has no NaN
    return value


def _join(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[value["__array__"]]
        if set(value) == {"__nan__"}:
            return float("nan")
        return {k: _join(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, arrays) for v in value]
    return value


def encode(snap: Snapshot) -> bytes:
    """The snapshot as one ``.npz`` file's bytes."""
    arrays: dict[str, np.ndarray] = {}
    meta = _split({"format": FORMAT, **snap.__dict__}, arrays)
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def decode(blob: bytes) -> Snapshot:
    """A snapshot from :func:`encode`'s bytes; ValueError when they are not one."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop(_META).tobytes().decode())
    except (OSError, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a Strix checkpoint: {exc}") from None
    if meta.pop("format", None) != FORMAT:
        raise ValueError("checkpoint written by another Strix checkpoint format")
    known = set(Snapshot.__dataclass_fields__)
    return Snapshot(**{k: v for k, v in _join(meta, arrays).items() if k in known})


# --- capture and restore -----------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python's and numpy's global generators (Keras seeds both with ``set_random_seed``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": [kind, keys, pos, has_gauss, gauss]}


def set_rng_state(state: Mapping[str, Any]) -> None:
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        np.random.set_state(tuple(state["numpy"]))  # type: ignore[arg-type]


def model_variables(model: keras.Model) -> list[Any]:
    """Every variable of the model, the seed generators' states included (dropout)."""
    sync = getattr(model, "jax_state_sync", None)
    if callable(sync):  # JAX keeps the live state outside the variables during fit
        sync()
    return list(model.variables)


def optimizer_variables(model: keras.Model) -> list[Any]:
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    return list(opt.variables)


def restore_variables(variables: Sequence[Any], values: Sequence[np.ndarray], what: str) -> None:
    if len(variables) != len(values):
        raise ValueError(f"checkpoint has {len(values)} {what} values, the model {len(variables)}")
    for var, value in zip(variables, values, strict=True):
        var.assign(value)


def spliced(partial: Mapping[str, float], done: int, logs: Mapping[str, Any], rest: int) -> dict:
    """The epoch's training means from those before the cut (over ``done`` samples) and
    those of the resumed remainder (over ``rest``): Keras weights its means by samples."""
    out = dict(logs)
    for key, before in partial.items():
        if key in out and not key.startswith("val_") and done + rest > 0:
            out[key] = (float(before) * done + float(out[key]) * rest) / (done + rest)
    return out


class Checkpointer(keras.callbacks.Callback):
    """Saves a snapshot after every epoch, every ``vault.interval_s`` inside an epoch, and
    at once (the next batch) when ``stop`` is set; then raises :class:`Preempted`.

    Saving is bounded to :data:`MAX_SHARE` of the training time: a save that is not asked
    for by a stop waits until the time trained since the last one is at least
    ``1 / MAX_SHARE - 1`` times what that one took. Epochs long against a save (the usual
    case) are each saved; very short ones are saved every few epochs.

    It must come last among the callbacks, so the epoch's state it saves is the one every
    other callback has already updated.
    """

    def __init__(
        self,
        vault: Vault,
        batches: Any,
        stateful: Mapping[str, Stateful],
        stop: threading.Event | None,
        carried: Snapshot | None = None,
    ) -> None:
        super().__init__()
        self.vault, self.batches, self.stateful, self.stop = vault, batches, stateful, stop
        self.resumes = carried.resumes if carried else 0
        self.epochs_lost = carried.epochs_lost if carried else 0.0
        self.saves: list[float] = []  # seconds each save took (the cost benchmark reads them)
        self._epoch_data: dict[str, Any] = {}
        self._epoch = 0
        self.offset = 0  # batches skipped in the epoch the trial resumed in
        self._last = time.monotonic()
        self._cost = 0.0  # seconds the last save took

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch = epoch  # batch callbacks are not told their epoch
        self._epoch_data = self.batches.state()  # this epoch's order, before it advances

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        done = self.offset + batch + 1
        if done >= self.batches.total:
            return  # the epoch is trained: its end saves, with validation done
        stopping = self.stop is not None and self.stop.is_set()
        interval = time.monotonic() - self._last >= self.vault.interval_s
        if stopping or (interval and self._affordable()):
            partial = {k: float(v) for k, v in (logs or {}).items()}
            self.save(self._snapshot(self._epoch, done, partial, self._epoch_data))
        if stopping:
            raise Preempted(f"stopped in epoch {self._epoch + 1} after batch {done}")

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.offset = 0
        if self.model.stop_training:
            return  # the trial ends here: nothing left to resume
        stopping = self.stop is not None and self.stop.is_set()
        if stopping or self._affordable():
            self.save(self._snapshot(epoch + 1, 0, {}, self.batches.state()))
        if stopping:
            raise Preempted(f"stopped after epoch {epoch + 1}")

    def _affordable(self) -> bool:
        """Whether saving now keeps checkpoints within ``MAX_SHARE`` of the time trained."""
        return time.monotonic() - self._last >= self._cost * (1 / MAX_SHARE - 1)

    def _snapshot(self, epoch: int, batch: int, partial: dict, data: dict) -> Snapshot:
        return Snapshot(
            epoch=epoch,
            batch=batch,
            weights=[np.asarray(v) for v in model_variables(self.model)],
            optimizer=[np.asarray(v) for v in optimizer_variables(self.model)],
            callbacks={name: cb.state() for name, cb in self.stateful.items()},
            data=data,
            rng=rng_state(),
            partial=partial,
            resumes=self.resumes,
            epochs_lost=self.epochs_lost,
            saved=time.time(),
        )

    def save(self, snap: Snapshot) -> bool:
        start = time.perf_counter()
        ok = self.vault.save(encode(snap), snap.epoch, snap.batch)
        self._cost = time.perf_counter() - start
        self.saves.append(self._cost)
        self._last = time.monotonic()
        return ok


class Reload(keras.callbacks.Callback):
    """Loads saved callback states right after ``fit`` reset them: it comes last, so its
    ``on_train_begin`` runs after theirs."""

    def __init__(self, stateful: Mapping[str, Stateful]) -> None:
        super().__init__()
        self.stateful = stateful
        self.pending: Mapping[str, Any] | None = None

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.pending:
            for name, state in self.pending.items():
                if name in self.stateful:
                    self.stateful[name].load_state(state)
        self.pending = None


class Splice(keras.callbacks.Callback):
    """First in the list while an epoch resumed in its middle ends: rewrites the shared
    logs dict in place so every later callback sees the whole epoch's training means."""

    def __init__(self, partial: Mapping[str, float], done: int, rest: int) -> None:
        super().__init__()
        self.partial, self.done, self.rest = dict(partial), done, rest

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs.update(spliced(self.partial, self.done, logs, self.rest))


def with_resume(snap: Snapshot, lost: float) -> Snapshot:
    """The snapshot as the attempt that resumes from it sees it: one more resume."""
    return replace(snap, resumes=snap.resumes + 1, epochs_lost=snap.epochs_lost + max(0.0, lost))
