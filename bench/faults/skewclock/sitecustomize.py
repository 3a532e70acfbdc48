"""Shift this process's wall clock by ``STRIX_CLOCK_SKEW`` seconds (tests and the chaos
benchmark put this folder first on a child's ``PYTHONPATH``).

It moves ``time.time``, ``time.time_ns`` and ``datetime.datetime.now``/``utcnow``, as a host
whose clock is wrong would see them. ``time.monotonic`` and thread waits are untouched,
which is why this is used instead of libfaketime (under which ``Event.wait`` hangs).
"""

import datetime as _dt
import os as _os
import time as _time

_SKEW = float(_os.environ.get("STRIX_CLOCK_SKEW") or 0.0)

if _SKEW:
    _real_time, _real_time_ns = _time.time, _time.time_ns

    def _time_shifted() -> float:
        return _real_time() + _SKEW

    def _time_ns_shifted() -> int:
        return _real_time_ns() + int(_SKEW * 1e9)

    class _SkewedDatetime(_dt.datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return _dt.datetime.fromtimestamp(_time_shifted(), tz)

        @classmethod
        def utcnow(cls):  # type: ignore[override]
            return _dt.datetime.fromtimestamp(_time_shifted(), _dt.UTC).replace(tzinfo=None)

    _time.time, _time.time_ns = _time_shifted, _time_ns_shifted
    _dt.datetime = _SkewedDatetime  # type: ignore[misc]
