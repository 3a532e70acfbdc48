"""The objective of one trial: build, train with early stopping, report a hyperopt result.

A trial never raises for reasons that belong to the sampled parameters (a model too deep
for the image, a learning rate that makes training diverge, a model too large for the
GPU): those become ``{"status": "fail", ...}`` so the search goes on and TPE learns to avoid
the region. Mistakes in the study itself (unknown model or optimizer, bad budget) raise
:class:`~shared.errors.ConfigError`, because every later trial would fail the same way.

The hyperopt ``loss`` is ``1 - val_accuracy`` of the weights early stopping restores (the
epoch with the lowest validation loss), i.e. of the model that would actually be exported,
not of whichever epoch happened to have the highest accuracy. ``Budget.monitor`` chooses
what early stopping watches and restores: ``val_loss`` (the seed's rule, the default) or
``val_accuracy``; the loss is always ``1 -`` the val accuracy of the weights kept.
A *pruned* trial is an ``ok`` result scored by the best val accuracy it reached
(:meth:`shared.training.callbacks.PruneOnRung.result` says why).
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import math
import numbers
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from shared.catalog import entry as catalog_entry
from shared.config import defaults
from shared.data.batches import Batches
from shared.data.cache import Dataset
from shared.errors import ConfigError, ModelError
from shared.models import build_model
from shared.spaces import flatten
from shared.training import backend
from shared.training.callbacks import (
    EpochRecorder,
    EpochSink,
    History,
    Judge,
    KeptBest,
    PruneOnRung,
    StopOnEvent,
    StopOnNonFinite,
)
from shared.training.checkpoint import Snapshot, Vault
from shared.training.optimizers import OPTIMIZER_CLASSES, make_optimizer
from shared.training.resume import fit as resume_fit
from shared.training.resume import load_snapshot, with_record
from shared.training.schedules import MONITORS, check_monitor, kept_epoch, lr_schedule

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_OPTIMIZER = "adam"
__all__ = ["OPTIMIZER_CLASSES", "Budget", "diverged", "make_optimizer", "run_trial", "train"]


@dataclass(frozen=True)
class Budget:
    """How long one trial may train; stored with the study so every worker agrees."""

    max_epochs: int = defaults.MAX_EPOCHS
    patience: int = defaults.PATIENCE
    monitor: str = "val_loss"  # early stopping watches and restores it (training.schedules)

    def __post_init__(self) -> None:
        check_monitor(self.monitor)
        for name in ("max_epochs", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ConfigError(
                    f"Budget.{name} must be a whole number >= 1, got {value!r}; "
                    f"e.g. Budget(max_epochs={defaults.MAX_EPOCHS}, patience={defaults.PATIENCE})."
                )
            object.__setattr__(self, name, int(value))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_epochs": self.max_epochs, "patience": self.patience}
        return out if self.monitor == "val_loss" else {**out, "monitor": self.monitor}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Budget:
        unknown = sorted(set(d) - {"max_epochs", "patience", "monitor"})
        if unknown:
            raise ConfigError(
                f"unknown budget field(s) {unknown}; expected max_epochs, patience, monitor."
            )
        return cls(**dict(d))


def train(
    model_name: str,
    params: Mapping[str, Any],
    *,
    data: Dataset,
    epochs: int,
    early_stopping: bool,
    validation: bool,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    recorder: EpochRecorder | None = None,
    seed: int | None = None,
    deterministic: bool = False,
    weights: str | None = None,
    patience: int = defaults.PATIENCE,
    monitor: str = "val_loss",
    tb_dir: str | None = None,
    verbose: int = 0,
    feature_cache: str | None = None,
    merge_val: bool = False,
    vault: Vault | None = None,
    resume: Snapshot | None = None,
    stop: threading.Event | None = None,
) -> tuple[keras.Model, History]:
    """Build, compile and fit one model; shared by trials and the final retrain.

    With ``feature_cache`` (a cache directory) a model with a frozen base trains only its
    head, on the base's outputs computed once (:mod:`shared.data.features`); the returned full
    model carries the cached base's weights, so it predicts exactly what was trained.
    Raises ModelError when the params cannot be built for ``data``'s image size. A diverged
    run is *not* an exception here: check :func:`diverged` on the returned history.
    ``merge_val`` trains on the training and validation images together (the final
    retrain, where model selection is over). With a ``vault`` it saves checkpoints
    there (:mod:`shared.training.resume`), continues from ``resume`` when given, and
    ``stop`` makes it save one and raise :class:`~shared.training.checkpoint.Preempted`.
    """
    _check_request(data, early_stopping=early_stopping, validation=validation, tb_dir=tb_dir)
    keras.backend.clear_session()
    _seed(seed, deterministic)
    flat = flatten(dict(params))
    batch_size = _batch_size(flat.get("batch_size", DEFAULT_BATCH_SIZE))
    optimizer = make_optimizer(
        flat.get("optimizer", DEFAULT_OPTIMIZER), flat.get("learning_rate", DEFAULT_LEARNING_RATE)
    )
    model = _build(model_name, params, data, weights)
    fitted, x_train, x_val = _on_features(model, model_name, weights, data, feature_cache)
    y_train = data.y_train
    if merge_val:  # a copy in memory, made once for the whole retrain
        x_train, y_train = np.concatenate([x_train, x_val]), np.concatenate([y_train, data.y_val])
    fitted.compile(
        optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    train_batches = Batches(x_train, y_train, batch_size, shuffle=True, seed=seed)
    val_batches = Batches(x_val, data.y_val, batch_size, shuffle=False) if validation else None
    recorder = recorder or EpochRecorder()
    schedule = lr_schedule(flat, flat.get("learning_rate", DEFAULT_LEARNING_RATE))
    extra = [*schedule, recorder, *callbacks]  # the schedule first: the recorder sees its rate
    every = _callbacks(extra, early_stopping, patience, tb_dir, monitor)
    if vault is not None:
        cp = resume_fit(
            fitted, train_batches, val_batches, epochs=int(epochs), callbacks=every,
            vault=vault, stop=stop, resume=resume, verbose=verbose,
        )  # fmt: skip
        recorder.costs = {"checkpoints": len(cp.saves), "checkpoint_seconds": sum(cp.saves)}
    else:  # Batches shuffles itself, reproducibly from ``seed``
        fitted.fit(
            train_batches, validation_data=val_batches, epochs=int(epochs), shuffle=False,
            callbacks=every, verbose=verbose,
        )  # fmt: skip
    return model, recorder.history


def _on_features(
    model: keras.Model, name: str, weights: str | None, data: Dataset, cache_dir: str | None
) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """(what to fit, its training inputs, its validation inputs): the model on images, or
    its head on the cached outputs of its frozen base."""
    if cache_dir is None:
        return model, data.x_train, data.x_val
    from shared.data import features

    cached = features.features_for(model, name, weights, data, cache_dir)
    base_layer = model.get_layer(catalog_entry(name).base_layer)
    base_layer.load_weights(cached.base_weights)  # the base the features came from
    _, head = features.split(model, base_layer.name)
    return head, cached.x_train, cached.x_val


def run_trial(
    model_name: str,
    params: Mapping[str, Any],
    *,
    data: Dataset,
    budget: Budget = Budget(),  # frozen, so one shared default is safe
    callbacks: Sequence[keras.callbacks.Callback] = (),
    on_epoch: EpochSink | None = None,
    stop: threading.Event | None = None,
    judge: Judge | None = None,
    seed: int | None = None,
    deterministic: bool = False,
    weights: str | None = None,
    tb_dir: str | None = None,
    verbose: int = 0,
    on_model: Callable[[keras.Model], None] | None = None,
    feature_cache: str | None = None,
    vault: Vault | None = None,
) -> dict[str, Any]:
    """One hyperopt evaluation; returns a result dict and never the model.

    ``on_epoch`` receives every finished epoch (the worker's live metrics); ``stop`` ends
    training at the next batch once set; ``judge`` is asked after every epoch whether the
    study's pruner stops the trial; ``on_model`` gets the trained model with the weights
    kept, before it is freed (``strix train`` tests and exports it there). With a
    ``vault`` the trial checkpoints into it, resumes from its checkpoint, and a set
    ``stop`` saves one and raises :class:`~shared.training.checkpoint.Preempted`.
    """
    recorder = EpochRecorder(on_epoch)
    resume = load_snapshot(vault) if vault is not None else None
    if stop is not None and vault is None:
        callbacks = [StopOnEvent(stop), *callbacks]
    pruner = PruneOnRung(judge) if judge is not None else None
    if pruner is not None:
        callbacks = [*callbacks, pruner]
    base: dict[str, Any] = {
        "model": model_name,
        "image_size": int(data.spec.image_size),
        "backend": backend.current(),
        "precision": keras.mixed_precision.global_policy().name,
        "feature_cache": feature_cache is not None,
    }
    model = None
    try:
        model, _ = train(
            model_name,
            params,
            data=data,
            epochs=budget.max_epochs,
            early_stopping=True,
            validation=True,
            callbacks=callbacks,
            recorder=recorder,
            seed=seed,
            deterministic=deterministic,
            weights=weights,
            patience=budget.patience,
            monitor=budget.monitor,
            tb_dir=tb_dir,
            verbose=verbose,
            feature_cache=feature_cache,
            vault=vault,
            resume=resume,
            stop=stop,
        )
        if on_model is not None and not diverged(recorder.history):
            on_model(model)
        if pruner is not None and pruner.decision is not None and not diverged(recorder.history):
            result = {**base, **recorder.summary(), **pruner.result(recorder.history)}
        else:
            result = _summarise(base, recorder, params, budget)
        return result if vault is None else with_record(vault, resume, result, model)
    except ModelError as exc:
        log.info("trial %s failed to build: %s", model_name, exc)
        return _fail(base, recorder, f"model cannot be built: {exc}")
    except Exception as exc:  # each backend raises its own out-of-memory type
        if not backend.is_oom(exc):
            raise
        log.warning("trial %s ran out of memory: %s", model_name, _first_line(exc))
        return {**_fail(base, recorder, "oom"), "detail": _first_line(exc)}
    finally:
        del model
        keras.backend.clear_session()
        gc.collect()


def diverged(history: Mapping[str, Sequence[float | None]]) -> str | None:
    """Why a history shows divergence (a NaN/inf loss), or None when it is finite."""
    for key in ("loss", "val_loss"):
        for epoch, value in enumerate(history.get(key, ()), start=1):
            if value is None or not math.isfinite(value):
                return f"training diverged: {key} became NaN or inf in epoch {epoch}"
    return None


# --- helpers ------------------------------------------------------------------------


def _summarise(
    base: dict[str, Any], recorder: EpochRecorder, params: Mapping[str, Any], budget: Budget
) -> dict[str, Any]:
    history = recorder.history
    reason = diverged(history)
    if reason is not None:
        lr = flatten(dict(params)).get("learning_rate", DEFAULT_LEARNING_RATE)
        return _fail(base, recorder, f"{reason}; try a lower learning_rate (was {lr})")
    val_loss = history.get("val_loss", [])
    if not val_loss:
        return _fail(base, recorder, "no epoch completed (stopped before the first epoch ended)")
    best = kept_epoch(history, budget.monitor)
    val_accuracy = history.get("val_accuracy", [None] * len(val_loss))[best]
    if val_accuracy is None:
        return _fail(base, recorder, "val_accuracy was not reported for the best epoch")
    partial = recorder.summary()
    return {
        **base,
        **partial,
        "status": "ok",
        "loss": 1.0 - val_accuracy,
        "val_loss": val_loss[best],
        "val_accuracy": val_accuracy,
        "best_epoch": best + 1,
        "max_val_accuracy": max(v for v in history["val_accuracy"] if v is not None),
        "stopped_early": partial["epochs"] < budget.max_epochs,
    }


def _fail(base: dict[str, Any], recorder: EpochRecorder, reason: str) -> dict[str, Any]:
    return {**base, **recorder.summary(), "status": "fail", "loss": None, "reason": reason}


def _build(
    model_name: str, params: Mapping[str, Any], data: Dataset, weights: str | None
) -> keras.Model:
    try:
        return build_model(
            model_name,
            dict(params),
            image_size=data.spec.image_size,
            channels=data.spec.channels,
            weights=weights,
        )
    except ValueError as exc:  # Keras shape errors for combinations the builder missed
        raise ModelError(
            f"{model_name} cannot be built at {data.spec.image_size}px with {dict(params)}: "
            f"{_first_line(exc)}"
        ) from exc


def _callbacks(
    extra: Sequence[keras.callbacks.Callback],
    early_stopping: bool,
    patience: int,
    tb_dir: str | None,
    monitor: str = "val_loss",
) -> list[keras.callbacks.Callback]:
    # Order matters: EarlyStopping snapshots weights before callers' callbacks see the epoch.
    out: list[keras.callbacks.Callback] = [StopOnNonFinite()]
    if early_stopping:
        out.append(
            KeptBest(monitor, patience=patience, mode=MONITORS[monitor], restore_best_weights=True)
        )
    if tb_dir is not None:
        out.append(keras.callbacks.TensorBoard(log_dir=str(tb_dir), write_graph=False))
    return [*out, *extra]


def _check_request(
    data: Dataset, *, early_stopping: bool, validation: bool, tb_dir: str | None
) -> None:
    """Refuse impossible combinations before any time is spent building."""
    if early_stopping and not validation:
        raise ConfigError("early stopping monitors val_loss, so it needs validation=True.")
    if validation and len(data.x_val) == 0:
        raise ConfigError("the validation split is empty; load it with validation_fraction > 0.")
    if tb_dir is not None and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            f"tb_dir={tb_dir!r} needs the tensorboard package: `pip install tensorboard`, "
            "or leave tb_dir unset."
        )


def _seed(seed: int | None, deterministic: bool) -> None:
    if deterministic and seed is None:
        raise ConfigError("deterministic=True needs a seed, e.g. seed=0.")
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    if deterministic:
        # Process-wide and sticky: a worker that asks for it once keeps it.
        backend.enable_determinism()


def _batch_size(value: Any) -> int:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or value != int(value) or int(value) < 1:
        raise ConfigError(f"batch_size must be a whole number >= 1, got {value!r}; e.g. 32.")
    return int(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]
