"""Trial runs as the workers' logs tell them, on one (the real) clock: pure functions.

A run starts at ``trial N of KEY started`` and ends at ``trial N ended`` or at the first
line that stops it in the same process (a stop verdict, a signal), or at the process's
SIGKILL; the line that records it (a result, a requeue, "taken over") says how it ended.
Log times are the worker's own wall clock, skewed on purpose in the chaos benchmark, so
each log's skew is taken off first. Two runs of one trial in two processes
that overlap in time ran "twice at the same time".
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
START = re.compile(r"trial (\d+) of \S+ started")
ENDS = (
    (re.compile(r"trial (\d+) (?:ok|fail): loss="), "ok"),
    (re.compile(r"trial (\d+) marked ERROR"), "error"),
    (re.compile(r"trial (\d+)(?: was requeued by the reaper|: our lease ran out)"), "stopped"),
    (re.compile(r"trial (\d+) (?:put back in the queue|was taken over)"), "stopped"),
)
SIGNAL = re.compile(r"signal \d+: finishing up")


@dataclass(frozen=True)
class Run:
    """One execution of one trial by one worker process, in real epoch seconds."""

    tid: int
    proc: str
    start: float
    end: float
    how: str  # ok, error, stopped, killed or running


def _when(line: str, skew: float) -> float | None:
    m = STAMP.match(line)
    if m is None:
        return None
    local = dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f")
    return local.timestamp() - skew  # asctime is local time, as .timestamp() reads it


def _ended(line: str, tid: int) -> str | None:
    if SIGNAL.search(line):
        return "stopped"
    for pattern, how in ENDS:
        m = pattern.search(line)
        if m and int(m[1]) == tid:
            return how
    return None


def runs_in_log(text: str, proc: str, skew: float, died_at: float | None, now: float) -> list[Run]:
    """The runs one worker process's log shows; ``died_at``: when it was SIGKILL-ed."""
    out: list[Run] = []
    tid, start, stopped = -1, 0.0, None  # the open run (tid -1: none), when it stopped
    for line in text.splitlines():
        t = _when(line, skew)
        if t is None:
            continue
        if tid >= 0 and stopped is None and (_ENDED.search(line) or _stops(line, tid)):
            stopped = t
        if tid >= 0 and (how := _ended(line, tid)) is not None and not SIGNAL.search(line):
            out.append(Run(tid, proc, start, stopped or t, how))
            tid, stopped = -1, None
        if m := START.search(line):
            tid, start, stopped = int(m[1]), t, None
    if tid >= 0:
        end, how = (died_at, "killed") if died_at is not None else (now, "running")
        out.append(Run(tid, proc, start, stopped or end, how))
    return out


_ENDED = re.compile(r"trial \d+ ended \(")


def _stops(line: str, tid: int) -> bool:
    """A line that stops the running trial at once: a signal, or a stop verdict about it."""
    m = ENDS[2][0].search(line)
    return bool(SIGNAL.search(line) or (m and int(m[1]) == tid))


def concurrent(runs: list[Run]) -> dict[int, list[Run]]:
    """Trials that two processes ran at the same time: tid -> the overlapping runs."""
    by_tid: dict[int, list[Run]] = defaultdict(list)
    for r in runs:
        by_tid[r.tid].append(r)
    found: dict[int, list[Run]] = {}
    for tid, rs in by_tid.items():
        rs.sort(key=lambda r: r.start)
        latest = rs[0]  # of the runs so far, the one that ends last
        for b in rs[1:]:
            if latest.proc != b.proc and b.start < latest.end:
                found.setdefault(tid, []).extend([latest, b])
            latest = max(latest, b, key=lambda r: r.end)
    return found


def thrown_away_s(runs: list[Run]) -> float:
    """Seconds of trial execution that produced no result (killed, stopped, requeued)."""
    return sum(r.end - r.start for r in runs if r.how in ("killed", "stopped"))
