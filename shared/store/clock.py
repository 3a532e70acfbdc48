"""The one clock leases trust: the MongoDB server's (the primary's on a replica set).

Hosts' wall clocks disagree by seconds or minutes; a lease decided by the reaper's own
``time.time()`` reaps live trials on a slow host and never reaps dead ones on a fast one.
So every lease time in Strix is *server* time, as epoch seconds.

The server's time is read with ``hello`` (its ``localTime``), which MongoDB and nx-27017
both answer, needs no privilege, and costs one round trip. nx-27017 cannot evaluate
``$$NOW`` in an update pipeline, so expiries are computed here rather than by the server.
A reaper reads the server's time afresh for each check; a holder estimates it from the
last reading plus this process's monotonic clock (which no wall-clock change moves), and
reads it again every ``resync_s``. The estimate is off by at most half a round trip plus
the monotonic drift since the last reading: milliseconds, against a grace of seconds.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

_EPOCH = dt.datetime(1970, 1, 1)


def _epoch_s(value: dt.datetime) -> float:
    naive = value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
    return (naive - _EPOCH).total_seconds()


class ServerClock:
    """The server's time for one client: fresh with :meth:`read`, estimated with :meth:`now`."""

    def __init__(self, client: Any, resync_s: float = 30.0) -> None:
        self.client, self.resync_s = client, resync_s
        self._lock = threading.Lock()
        self._base: tuple[float, float] | None = None  # (server epoch s, local monotonic)

    def read(self) -> float:
        """Ask the server for its time now (one round trip), and keep it for estimates."""
        sent = time.monotonic()
        reply = self.client.admin.command("hello")
        got = time.monotonic()
        server = _epoch_s(reply["localTime"])
        with self._lock:
            self._base = (server, (sent + got) / 2)
        return server

    def now(self) -> float:
        """The server's time estimated locally; read afresh when the last reading is old."""
        with self._lock:
            base = self._base
        if base is None or time.monotonic() - base[1] > self.resync_s:
            return self.read()
        return base[0] + (time.monotonic() - base[1])
