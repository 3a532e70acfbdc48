"""The optimizers a search space may name, built fresh for every trial."""

from __future__ import annotations

import math

import keras

from shared.errors import ConfigError

OPTIMIZER_CLASSES: dict[str, type[keras.optimizers.Optimizer]] = {
    "adam": keras.optimizers.Adam,
    "adamax": keras.optimizers.Adamax,
    "nadam": keras.optimizers.Nadam,
    "rms-prop": keras.optimizers.RMSprop,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
}


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A fresh optimizer; the names are the ones the search spaces sample."""
    cls = OPTIMIZER_CLASSES.get(str(name).strip().lower())
    if cls is None:
        raise ConfigError(
            f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZER_CLASSES)} "
            "(fix the search space or the params)."
        )
    try:
        lr = float(learning_rate)
    except (TypeError, ValueError):
        lr = math.nan
    if not math.isfinite(lr) or lr <= 0:
        raise ConfigError(
            f"learning_rate must be a finite number > 0, got {learning_rate!r}; e.g. 0.001."
        )
    return cls(learning_rate=lr)
