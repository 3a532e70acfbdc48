"""A background thread that proves this worker is alive while it trains.

It touches the job's heartbeat and renews the GPU slot and lease every ``--heartbeat``
seconds. When the job turns out to be no longer ours (the reaper gave it away during a
long stall), it tells the trainer to stop, so two workers never finish the same trial.
``beat`` returns what it found lost (None: all is ours), and ``on_lost`` gets exactly that:
a verdict about one trial must reach that trial only, never the one running when a late
reply comes back.
A failing beat never ends the thread: it logs, retries sooner (backing off from 0.5 s up
to the interval), and says when beats work again, so a short store outage or a bad
GPU document cannot make the reaper take a trial that is still running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
FIRST_RETRY_S = 0.5


class Heartbeat(threading.Thread):
    def __init__(
        self,
        interval: float,
        beat: Callable[[], Any],
        on_lost: Callable[[Any], None],
        due: Callable[[], float] = lambda: float("inf"),
        expire: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name="strix-heartbeat", daemon=True)
        self.interval = interval
        self.due, self.expire = due, expire  # seconds left on the held lease; when it ran out
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
        threading.Thread(target=self._fence, name="strix-fence", daemon=True).start()
        while not self._halt.wait(self.next_wait()):
            self.tick()

    def _fence(self) -> None:
        """Apart from the beats, which a store outage can block for seconds: the moment
        the held lease may have run out at the server, call ``expire`` (stop the trial)."""
        while not self._halt.wait(max(0.01, min(1.0, self.due()))):
            if self.due() <= 0:
                self.expire()

    def tick(self) -> None:
        try:
            lost = self.beat()
        except Exception as e:  # never let one bad beat end the heartbeat for good
            self.failures += 1
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            log.log(level, "heartbeat failed (%s: %s); retrying", type(e).__name__, e)
            return
        if self.failures:
            log.info("heartbeat works again after %d failed beat(s)", self.failures)
            self.failures = 0
        if lost is not None:
            self.on_lost(lost)

    def stop(self) -> None:
        self._halt.set()
