"""What a worker holds now: one run of one trial, its lease deadline, and the verdicts.

A verdict ("not ours any more", "the lease ran out") is about one run. It must stop that
run and nothing else: a heartbeat reply about trial A that comes back after A finished
and B started is dropped here, under the same lock as the switch from A to B.

A holder also fences itself: it knows (by its monotonic clock) when the lease it last
wrote may run out at the server; if no beat renewed it by then (a store outage longer than
its grace), it stops the trial itself, before any reaper may give it to another worker.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Active:
    """One run of one trial: the verdicts about it belong to it alone."""

    job: dict
    holder: str | None  # GPU lease id, None on CPU-only hosts
    deadline: float = float("inf")  # monotonic: when our lease may run out at the server
    lost: bool = field(default=False)  # another run holds the trial now
    fenced: bool = field(default=False)  # stopped by us: the lease ran out unrenewed
    finishing: bool = field(default=False)  # it ran; its outcome is being stored (guarded)


def lease_deadline(sent: float, grace: float) -> float:
    """When a lease written at or after monotonic ``sent`` may end: a little early, for
    the error of the server-clock estimate."""
    return sent + grace - min(1.0, 0.1 * grace)


class Tenure:
    """The current run and the one lock that orders verdicts against trial switches."""

    def __init__(self, trial_stop: threading.Event, stop_requested: threading.Event) -> None:
        self.trial_stop, self.stop_requested = trial_stop, stop_requested
        self.current: Active | None = None
        self._lock = threading.Lock()

    def begin(self, active: Active) -> None:
        with self._lock:
            self.current = active
            self.trial_stop.clear()
            if self.stop_requested.is_set():
                self.trial_stop.set()

    def end(self) -> None:
        with self._lock:
            self.current = None

    def lose(self, active: Active) -> None:
        """Stop ``active`` if it still runs; a late verdict about an earlier run is dropped."""
        with self._lock:
            tid = active.job.get("tid")
            if self.current is not active or active.finishing:
                # it ended: a late verdict is moot (the guarded finish says what landed)
                log.info("late verdict about trial %s ignored: that run ended", tid)
                return
            if active.fenced:
                log.warning("trial %s: our lease ran out unrenewed; stopping it", tid)
            else:
                log.warning("trial %s was requeued by the reaper; stopping it", tid)
                active.lost = True
            self.trial_stop.set()

    def lose_job(self, job: dict) -> None:
        """A guarded write about ``job`` was refused: that run is lost, if it still runs."""
        active = self.current
        if active is not None and active.job is job:
            self.lose(active)

    def renewed(self, active: Active, sent: float, grace: float) -> None:
        active.deadline = lease_deadline(sent, grace)

    def left(self) -> float:
        """Seconds until the current run's lease may run out (inf: nothing to fence)."""
        active = self.current
        if active is None or active.fenced:
            return float("inf")
        return active.deadline - time.monotonic()

    def expire(self) -> None:
        active = self.current
        if active is not None and time.monotonic() >= active.deadline:
            active.fenced = True
            self.lose(active)
