"""``fit`` with checkpoints: from scratch, or from a :class:`~shared.training.checkpoint.Snapshot`.

Keras's ``fit`` can start at an epoch (``initial_epoch``) but not inside one, and it
resets every callback when it begins. So a trial resumed at batch ``b`` of epoch ``e``
trains in two ``fit`` calls: the rest of epoch ``e`` (its training means spliced with
those saved before the cut, early stopping told not to restore weights in between),
then epochs ``e + 1`` onwards. :class:`~shared.training.checkpoint.Reload` puts the
callbacks' saved state back after each ``fit`` reset it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import keras

from shared.training.callbacks import KeptBest
from shared.training.checkpoint import (
    Checkpointer,
    Reload,
    Snapshot,
    Splice,
    Stateful,
    Vault,
    decode,
    model_variables,
    optimizer_variables,
    restore_variables,
    set_rng_state,
    with_resume,
)

log = logging.getLogger(__name__)


def stateful_of(callbacks: Sequence[keras.callbacks.Callback]) -> dict[str, Stateful]:
    """The callbacks a checkpoint carries, by a name stable across workers."""
    out: dict[str, Stateful] = {}
    for cb in callbacks:
        if hasattr(cb, "state") and hasattr(cb, "load_state"):
            out[type(cb).__name__] = cb  # type: ignore[assignment]
    return out


def fit(
    model: keras.Model,
    batches: Any,
    val: Any,
    *,
    epochs: int,
    callbacks: Sequence[keras.callbacks.Callback],
    vault: Vault,
    stop: threading.Event | None,
    resume: Snapshot | None,
    verbose: int = 0,
) -> Checkpointer:
    """Train to ``epochs`` saving checkpoints into ``vault``; returns the checkpointer
    (its ``saves`` are what checkpointing cost)."""
    stateful = stateful_of(callbacks)
    cp = Checkpointer(vault, batches, stateful, stop, resume)
    reload = Reload(stateful)
    start = 0
    if resume is not None:
        _restore(model, batches, resume)
        reload.pending = resume.callbacks
        start = resume.epoch
        if resume.batch > 0:
            if _rest_of_epoch(model, batches, val, callbacks, cp, reload, resume, epochs, verbose):
                return cp  # the resumed epoch was the last one
            reload.pending = {name: cb.state() for name, cb in stateful.items()}
            start = resume.epoch + 1
    model.fit(
        batches,
        validation_data=val,
        initial_epoch=start,
        epochs=int(epochs),
        shuffle=False,
        callbacks=[*callbacks, cp, reload],
        verbose=verbose,
    )
    return cp


def _restore(model: keras.Model, batches: Any, snap: Snapshot) -> None:
    restore_variables(model_variables(model), snap.weights, "weight")
    restore_variables(optimizer_variables(model), snap.optimizer, "optimizer")
    set_rng_state(snap.rng)
    batches.restore(snap.data)


def _rest_of_epoch(
    model: keras.Model,
    batches: Any,
    val: Any,
    callbacks: Sequence[keras.callbacks.Callback],
    cp: Checkpointer,
    reload: Reload,
    snap: Snapshot,
    epochs: int,
    verbose: int,
) -> bool:
    """Train the batches of ``snap.epoch`` after the cut; True when training ends there."""
    kept = [cb for cb in callbacks if isinstance(cb, KeptBest)]
    samples = len(batches.x)
    done = min(snap.batch * batches.batch_size, samples)
    splice = Splice(snap.partial, done, samples - done)
    for cb in kept:
        cb.hold = True
    cp.offset = snap.batch
    try:
        model.fit(
            batches.rest_of_epoch(snap.batch),
            validation_data=val,
            initial_epoch=snap.epoch,
            epochs=snap.epoch + 1,
            shuffle=False,
            callbacks=[splice, *callbacks, cp, reload],
            verbose=verbose,
        )
    finally:
        for cb in kept:
            cb.hold = False
    if model.stop_training or snap.epoch + 1 >= epochs:
        for cb in kept:
            cb.on_train_end()
        return True
    return False


def load_snapshot(vault: Vault) -> Snapshot | None:
    """The checkpoint to resume from, counted as one more resume; None to start over."""
    blob = vault.load()
    if blob is None:
        return None
    try:
        snap = decode(blob)
    except ValueError as exc:
        log.warning("the trial's checkpoint is unusable (%s): it starts over", exc)
        return None
    log.info("resuming at epoch %d, batch %d", snap.epoch + 1, snap.batch)
    return with_resume(snap, float(getattr(vault, "reached", 0.0)) - snap.epoch)


def with_record(
    vault: Vault, resume: Snapshot | None, result: dict[str, Any], model: keras.Model
) -> dict[str, Any]:
    """The result with its resume record (how often, how many epochs were redone); a
    vault that keeps the best trials' final models gets the model here."""
    out = {
        **result,
        "resumes": resume.resumes if resume else 0,
        "epochs_lost": round(resume.epochs_lost, 3) if resume else 0.0,
    }
    keep = getattr(vault, "keep", None)
    if callable(keep) and out.get("status") == "ok":
        keep(out, model)
    return out
