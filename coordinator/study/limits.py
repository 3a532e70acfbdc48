"""Study-level budgets: when a study stops posting new trials.

* ``--stop-after N``: the best loss has not improved over the last ``N`` finished trials
  (hyperopt's ``no_progress_loss``, counted in the order trials finished, which is what
  matters when many workers finish trials out of posting order; a failed or pruned
  trial that does not beat the best counts as no progress).
* ``--timeout MINUTES``: a wall-clock budget for this launch.

Either way the study then posts nothing more, withdraws the trials no worker started yet,
and lets the running ones finish (a Ctrl-C meanwhile requeues them, as always).
hyperopt's own ``early_stop_fn`` reads the *last posted* trial, which under asynchronous
workers is still running, so the decision is made here, from finished trials only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StudyLimits:
    stop_after: int | None = None  # finished trials without a better loss
    timeout_s: float | None = None  # wall-clock seconds of this launch


def without_progress(losses: Sequence[float | None]) -> int:
    """How many trials finished since the best loss last improved (None: no loss)."""
    best, since = math.inf, 0
    for loss in losses:
        if loss is not None and loss < best:
            best, since = loss, 0
        else:
            since += 1
    return since


class Stopper:
    """Says why the study should stop posting, or None; reads the losses only when the
    number of finished trials changed."""

    def __init__(
        self,
        limits: StudyLimits,
        losses: Callable[[], Sequence[float | None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits, self.losses, self.clock = limits, losses, clock
        self.started = clock()
        self._finished = -1
        self._stale = 0

    def reason(self, finished: int) -> str | None:
        timeout, stop_after = self.limits.timeout_s, self.limits.stop_after
        if timeout is not None and self.clock() - self.started >= timeout:
            return f"--timeout {timeout / 60:g} min reached"
        if stop_after is None:
            return None
        if finished != self._finished:
            self._finished, self._stale = finished, without_progress(self.losses())
        if self._stale >= stop_after:
            return f"--stop-after {stop_after}: no better loss in the last {self._stale} trials"
        return None
