"""A background thread that proves this worker is alive while it trains.

It touches the job's ``refresh_time`` and renews the GPU slot and lease every
``--heartbeat`` seconds. When the job turns out to be no longer ours (the reaper gave it
away during a long stall), it tells the trainer to stop, so two workers never finish the
same trial.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shared.errors import StoreError

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(self, interval: float, beat: Callable[[], bool], on_lost: Callable[[], None]):
        super().__init__(name="strix-heartbeat", daemon=True)
        self.interval = interval
        self.beat = beat
        self.on_lost = on_lost
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                if not self.beat():
                    log.warning("our trial was requeued by the reaper; stopping it")
                    self.on_lost()
            except StoreError as e:  # the store may be restarting: keep trying
                log.warning("heartbeat failed: %s", e)

    def stop(self) -> None:
        self._halt.set()
