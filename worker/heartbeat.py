"""A background thread that proves this worker is alive while it trains.

It touches the job's heartbeat and renews the GPU slot and lease every ``--heartbeat``
seconds. When the job turns out to be no longer ours (the reaper gave it away during a
long stall), it tells the trainer to stop, so two workers never finish the same trial.
A failing beat never ends the thread: it logs, retries sooner (backing off from 0.5 s up
to the interval), and says when beats work again, so a short store outage or a bad
GPU document cannot make the reaper take a trial that is still running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
FIRST_RETRY_S = 0.5


class Heartbeat(threading.Thread):
    def __init__(self, interval: float, beat: Callable[[], bool], on_lost: Callable[[], None]):
        super().__init__(name="strix-heartbeat", daemon=True)
        self.interval = interval
        self.beat = beat
        self.on_lost = on_lost
        self.failures = 0
        self._halt = threading.Event()

    def next_wait(self) -> float:
        """The interval when beats work; after failures, 0.5 s doubling up to the interval."""
        if not self.failures:
            return self.interval
        return min(self.interval, FIRST_RETRY_S * 2 ** (self.failures - 1))

    def run(self) -> None:
        while not self._halt.wait(self.next_wait()):
            self.tick()

    def tick(self) -> None:
        try:
            ours = self.beat()
        except Exception as e:  # never let one bad beat end the heartbeat for good
            self.failures += 1
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            log.log(level, "heartbeat failed (%s: %s); retrying", type(e).__name__, e)
            return
        if self.failures:
            log.info("heartbeat works again after %d failed beat(s)", self.failures)
            self.failures = 0
        if not ours:
            log.warning("our trial was requeued by the reaper; stopping it")
            self.on_lost()

    def stop(self) -> None:
        self._halt.set()
