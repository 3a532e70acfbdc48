"""Options of the objective that change how one run trains, not what it builds.

* ``monitor``: what early stopping watches and restores. ``val_loss`` is the seed's rule
  (and Keras's habit); ``val_accuracy`` keeps the epoch that classifies best, which is
  what a trial's loss (``1 - val_accuracy`` of the kept weights) and the test report score.
* ``lr_decay``: a training param beside ``learning_rate``; the rate is multiplied by it
  after every epoch, the schedule seed 003 uses for MobileNet (0.0003, x0.8 per epoch).
  Being a param, a study can also search it.

Keras is imported only where a callback is built, so ``--help`` stays light.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from shared.errors import ConfigError

MONITORS = {"val_loss": "min", "val_accuracy": "max"}  # early stopping's choices, and mode
DEFAULT_MONITOR = "val_loss"


def check_monitor(monitor: Any) -> str:
    if monitor not in MONITORS:
        raise ConfigError(f"monitor must be one of {sorted(MONITORS)}, got {monitor!r}")
    return str(monitor)


def kept_epoch(history: Mapping[str, Sequence[float | None]], monitor: str) -> int:
    """The 0-based epoch whose weights early stopping restored: the first best, as Keras."""
    values = [math.nan if v is None else float(v) for v in history.get(monitor, [])]
    if not values:
        monitor = DEFAULT_MONITOR
        values = [math.nan if v is None else float(v) for v in history[monitor]]
    sign = 1.0 if MONITORS[monitor] == "min" else -1.0
    finite = [i for i, v in enumerate(values) if math.isfinite(v)] or list(range(len(values)))
    return min(finite, key=lambda i: sign * values[i])


def check_lr_decay(decay: Any) -> float | None:
    if decay is None:
        return None
    ok = isinstance(decay, numbers.Real) and not isinstance(decay, bool) and 0 < decay <= 1
    if not ok:
        raise ConfigError(f"lr_decay must be a number in (0, 1], got {decay!r}; e.g. 0.8.")
    return float(decay)


def lr_schedule(flat: Mapping[str, Any], learning_rate: float) -> list[Any]:
    """The per-epoch schedule callback when the params ask for one, else nothing."""
    decay = check_lr_decay(flat.get("lr_decay"))
    if decay is None:
        return []
    import keras

    start = float(learning_rate)
    return [keras.callbacks.LearningRateScheduler(lambda epoch: start * decay**epoch)]
