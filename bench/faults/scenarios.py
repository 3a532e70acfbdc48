"""``python -m bench.faults``: fault injection with real processes, and what must survive it.

Three scenarios, each a function that tests call with small parameters:

- A, :func:`scenario_kill`: workers are ``kill -9``-ed mid-trial and replaced. The reaper
  must requeue every lost trial after the grace period and count the attempt.
- B, :func:`scenario_restart`: the embedded MongoDB is stopped and started again on the
  same data directory and port. Workers and the coordinator must reconnect by themselves.
- C, :func:`scenario_sigterm`: every worker gets SIGTERM at once. Each must put its trial
  back in the queue (NEW, ``requeues`` += 1, never ERROR) and exit 0; new workers finish.

Each run ends with the same checks: exactly N trials, all DONE with an ok result, no tid
twice, nothing stuck RUNNING or NEW, no ERROR.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench._common import add_quick, make_parser, parse, setup_logging
from bench.faults.harness import Harness, Report
from shared.store import State

log = logging.getLogger(__name__)

EXAMPLES = """
  python -m bench.faults                       # A, B and C at full size (~2 min)
  python -m bench.faults --quick               # all three, small (~40 s)
  python -m bench.faults --scenarios A --trials 30 --kills 10
  python -m bench.faults --scenarios B --down 8 # keep the server down longer than
                                                # pymongo's 5 s server selection timeout
"""
QUICK = {"trials": "10", "kills": "3", "every": "0.8"}


@dataclass
class Setup:
    """What every scenario is given: where it runs, its size, and which server."""

    work_dir: Path
    trials: int | None = None  # None: the scenario's own default
    workers: int = 3
    sleep_s: float = 1.0  # length of one toy trial
    heartbeat: float = 0.5
    url: str | None = None  # None: an embedded server the harness owns
    db: str | None = None
    timeout: float = 300.0

    def size(self, default: int) -> int:
        return self.trials or default

    def harness(self, own_server: bool = False) -> Harness:
        url, db = (None, None) if own_server else (self.url, self.db)
        return Harness(self.work_dir, url, db, self.heartbeat, capacity=self.workers)


@contextmanager
def _study(
    setup: Setup, report: Report, own_server: bool = False, robust: bool = False
) -> Iterator[Harness]:
    """A harness with ``setup.workers`` ready workers and the study running; closed after."""
    h = setup.harness(own_server)
    try:
        h.spawn(setup.workers)
        h.start_study(report.trials, setup.sleep_s, robust=robust)
        yield h
    finally:
        h.close()


def _finish(h: Harness, report: Report, setup: Setup) -> Report:
    """Wait for the study, then verify; a timeout is reported with the counts at that time."""
    if not h.wait(h.study_done, setup.timeout, step=0.2):
        report.problems.append(f"study not finished after {setup.timeout:.0f}s: {h.counts()}")
    h.verify(report.trials, report)
    report.seconds = time.monotonic() - h.started
    report.ok = not report.problems
    return report


# --- A: kill -9 -------------------------------------------------------------------------


def scenario_kill(setup: Setup, *, kills: int = 10, every_s: float = 1.5, seed: int = 0) -> Report:
    """Kill a random busy worker every ``every_s`` seconds (at most ``kills`` times)."""
    report = Report("A kill-9", setup.size(30))
    with _study(setup, report) as h:
        killed, lost = _kill_loop(h, random.Random(seed), kills, every_s)
        _finish(h, report, setup)
        _check_attempts(h, report, lost)
    report.facts = {"kills": len(killed), "killed_trials": len(lost), **report.facts}
    return report


def _kill_loop(
    h: Harness, rng: random.Random, kills: int, every_s: float
) -> tuple[list[int], dict[int, int]]:
    """The pids killed, and how often each trial lost its worker to a kill."""
    lost: dict[int, int] = {}  # tid -> times its worker was killed under it
    killed: list[int] = []
    while len(killed) < kills and not h.study_done():
        time.sleep(every_s)
        busy = [p for p in h.workers if p.poll() is None and h.held_by(p.pid)]
        if not busy:
            continue
        victim = rng.choice(busy)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        for tid in h.held_by(victim.pid):  # after the kill: nobody can finish these now
            lost[tid] = lost.get(tid, 0) + 1
        killed.append(victim.pid)
        h.reap_exits()
        h.spawn(1, wait=False)
    return killed, lost


def _check_attempts(h: Harness, report: Report, lost: dict[int, int]) -> None:
    docs = h.trials()
    for tid, times in sorted(lost.items()):
        attempts = (docs.get(tid) or {}).get("attempts") or 0
        if attempts < times:
            report.problems.append(f"trial {tid} lost {times}x but attempts={attempts}")
    report.facts["lost"] = dict(sorted(lost.items()))


# --- B: restart the server ----------------------------------------------------------------


def scenario_restart(setup: Setup, *, down_s: float = 0.0, robust: bool = False) -> Report:
    """Stop the embedded server mid-study, keep it down ``down_s``, start it again."""
    from shared.store.embedded import start_embedded

    report = Report(f"B restart (down {down_s:g}s)", setup.size(20))
    # only a server the harness owns can be restarted
    with _study(setup, report, own_server=True, robust=robust) as h:
        h.wait(lambda: h.counts()["done"] >= report.trials // 3, setup.timeout)
        assert h.server is not None
        server, t0 = h.server, time.monotonic()
        server.stop()
        time.sleep(down_s)
        h.server = start_embedded(server.data_dir, server.host, server.port)
        report.facts["outage_s"] = round(time.monotonic() - t0, 2)
        _finish(h, report, setup)
        _check_survivors(h, report)
    return report


def _check_survivors(h: Harness, report: Report) -> None:
    h.reap_exits()
    if h.exited:
        report.problems.append(f"workers died instead of reconnecting: {h.exited}")
        report.ok = False
    report.facts["coordinator_errors_recovered"] = len(h.recovered)
    report.facts["tracebacks"] = {
        "fatal": h.study_errors,
        "recovered": h.recovered,
        "dead workers": [f"worker {pid}:\n{h.log_tail(pid)}" for pid in h.exited],
    }


# --- C: SIGTERM everyone ---------------------------------------------------------------


def scenario_sigterm(setup: Setup) -> Report:
    """SIGTERM every worker while each runs a trial, then let new workers finish."""
    report = Report("C sigterm-all", setup.size(12))
    with _study(setup, report) as h:
        if not h.wait(lambda: len(h.running()) == setup.workers, setup.timeout):
            report.problems.append("the workers never ran a trial each")
        held = {j["tid"] for j in h.running()}
        victims = list(h.workers)
        for p in victims:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(60) for p in victims]
        h.reap_exits()
        _check_requeued(h, report, held, codes)
        h.spawn(setup.workers)
        _finish(h, report, setup)
        docs = h.trials()
        missing = [t for t in held if not (docs.get(t) or {}).get("requeues")]
        if missing:
            report.problems.append(f"held trials without a requeue count: {missing}")
    return report


def _check_requeued(h: Harness, report: Report, held: set[int], codes: list[int]) -> None:
    report.facts["exit_codes"] = codes
    report.facts["requeued_trials"] = len(held)
    if any(codes):
        report.problems.append(f"workers exited with {codes} after one SIGTERM, expected 0")
    for doc in h.trials(sorted(held)).values():
        if doc["state"] != State.NEW or doc.get("owner") is not None:
            report.problems.append(f"trial {doc['tid']} is state {doc['state']} after SIGTERM")
        if doc.get("requeue_reason") != "worker stopped by signal" or doc.get("attempts"):
            report.problems.append(f"trial {doc['tid']} was not requeued gracefully: {doc}")


# --- CLI -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        "python -m bench.faults",
        "Kill, restart and signal real Strix processes mid-study; check the study.",
        EXAMPLES,
    )
    p.add_argument("--scenarios", default="A,B,C", help="any of A,B,C (default all)")
    p.add_argument("--trials", type=int, help="trials per scenario (default 30/20/12)")
    p.add_argument("--kills", type=int, default=10, help="A: kill -9 this many times")
    p.add_argument("--every", type=float, default=1.5, help="A: seconds between kills")
    p.add_argument("--sleep", type=float, default=1.0, help="toy trial length, s")
    p.add_argument("--down", type=float, default=0.0, help="B: seconds the server stays down")
    p.add_argument("--robust", action="store_true", help="B: rerun the coordinator on errors")
    add_quick(p, QUICK)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv, QUICK)
    setup_logging(args.verbose)
    runs = {
        "A": lambda s: scenario_kill(s, kills=args.kills, every_s=args.every),
        "B": lambda s: scenario_restart(s, down_s=args.down, robust=args.robust),
        "C": scenario_sigterm,
    }
    names = [n.strip() for n in args.scenarios.upper().split(",") if n.strip()]
    if not names or set(names) - set(runs):
        print(
            f"bench.faults: error: --scenarios {args.scenarios!r}; use some of A,B,C, e.g. "
            "--scenarios A,C",
            file=sys.stderr,
        )
        return 2
    reports = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"strix-faults-{name}-") as tmp:
            setup = Setup(Path(tmp), trials=args.trials, sleep_s=args.sleep)
            reports.append(runs[name](setup))
        print(reports[-1].line(), flush=True)
        for kind, tbs in reports[-1].facts.get("tracebacks", {}).items():
            for tb in tbs:
                print(f"--- {kind}:\n{tb}", file=sys.stderr)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
