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
from pathlib import Path

from bench._common import Harness, Report, setup_logging

log = logging.getLogger("bench.faults")

EXAMPLES = """
examples:
  python -m bench.faults                       # A, B and C at full size (~2 min)
  python -m bench.faults --scenarios A --trials 30 --kills 10
  python -m bench.faults --scenarios B --down 8 # keep the server down longer than
                                                # pymongo's 5 s server selection timeout
"""


def _finish(h: Harness, report: Report, n: int, timeout: float, started: float) -> Report:
    """Wait for the study, then verify; a timeout is reported with the counts at that time."""
    if not h.wait(h.study_done, timeout, step=0.2):
        report.problems.append(f"study not finished after {timeout:.0f}s: {h.counts()}")
    h.verify(n, report)
    report.seconds = time.monotonic() - started
    report.ok = not report.problems
    return report


# --- A: kill -9 -------------------------------------------------------------------------


def scenario_kill(
    work_dir: Path,
    *,
    trials: int = 30,
    workers: int = 3,
    sleep_s: float = 1.0,
    heartbeat: float = 0.5,
    kills: int = 10,
    every_s: float = 1.5,
    url: str | None = None,
    db: str | None = None,
    seed: int = 0,
    timeout: float = 300.0,
) -> Report:
    """Kill a random busy worker every ``every_s`` seconds (at most ``kills`` times)."""
    rng = random.Random(seed)
    report = Report("A kill-9", trials)
    h = Harness(work_dir, url, db, heartbeat, max_attempts=20, capacity=workers)
    lost: dict[int, int] = {}  # tid -> times its worker was killed under it
    killed: list[int] = []
    try:
        h.spawn(workers)
        started = time.monotonic()
        h.start_study(trials, sleep_s)
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
        _finish(h, report, trials, timeout, started)
        _check_attempts(h, report, lost)
    finally:
        h.close()
    report.facts = {"kills": len(killed), "killed_trials": len(lost), **report.facts}
    return report


def _check_attempts(h: Harness, report: Report, lost: dict[int, int]) -> None:
    docs = {d["tid"]: d for d in h.store.find_jobs({"exp_key": h.exp_key})}
    for tid, times in sorted(lost.items()):
        attempts = (docs.get(tid) or {}).get("attempts") or 0
        if attempts < times:
            report.problems.append(f"trial {tid} lost {times}x but attempts={attempts}")
    report.facts["lost"] = dict(sorted(lost.items()))


# --- B: restart the server ----------------------------------------------------------------


def scenario_restart(
    work_dir: Path,
    *,
    trials: int = 20,
    workers: int = 3,
    sleep_s: float = 1.0,
    heartbeat: float = 0.5,
    down_s: float = 0.0,
    robust: bool = False,
    timeout: float = 300.0,
) -> Report:
    """Stop the embedded server mid-study, keep it down ``down_s``, start it again."""
    from shared.embedded import start_embedded

    report = Report(f"B restart (down {down_s:g}s)", trials)
    h = Harness(work_dir, heartbeat=heartbeat, capacity=workers)
    try:
        h.spawn(workers)
        started = time.monotonic()
        h.start_study(trials, sleep_s, robust=robust)
        h.wait(lambda: h.counts()["done"] >= trials // 3, timeout)
        assert h.server is not None
        server, t0 = h.server, time.monotonic()
        server.stop()
        time.sleep(down_s)
        h.server = start_embedded(server.data_dir, server.host, server.port)
        report.facts["outage_s"] = round(time.monotonic() - t0, 2)
        _finish(h, report, trials, timeout, started)
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
    finally:
        h.close()
    return report


# --- C: SIGTERM everyone ---------------------------------------------------------------


def scenario_sigterm(
    work_dir: Path,
    *,
    trials: int = 12,
    workers: int = 3,
    sleep_s: float = 1.0,
    heartbeat: float = 0.5,
    url: str | None = None,
    db: str | None = None,
    timeout: float = 300.0,
) -> Report:
    """SIGTERM every worker while each runs a trial, then let new workers finish."""
    report = Report("C sigterm-all", trials)
    h = Harness(work_dir, url, db, heartbeat, capacity=workers)
    try:
        h.spawn(workers)
        started = time.monotonic()
        h.start_study(trials, sleep_s)
        if not h.wait(lambda: len(h.running()) == workers, timeout):
            report.problems.append("the workers never ran a trial each")
        held = {j["tid"] for j in h.running()}
        victims = list(h.workers)
        for p in victims:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(60) for p in victims]
        h.reap_exits()
        _check_requeued(h, report, held, codes)
        h.spawn(workers)
        _finish(h, report, trials, timeout, started)
        docs = {d["tid"]: d for d in h.store.find_jobs({"exp_key": h.exp_key})}
        missing = [t for t in held if not (docs.get(t) or {}).get("requeues")]
        if missing:
            report.problems.append(f"held trials without a requeue count: {missing}")
    finally:
        h.close()
    return report


def _check_requeued(h: Harness, report: Report, held: set[int], codes: list[int]) -> None:
    report.facts["exit_codes"] = codes
    report.facts["requeued_trials"] = len(held)
    if any(codes):
        report.problems.append(f"workers exited with {codes} after one SIGTERM, expected 0")
    for doc in h.store.find_jobs({"exp_key": h.exp_key, "tid": {"$in": sorted(held)}}):
        if doc["state"] != 0 or doc.get("owner") is not None:
            report.problems.append(f"trial {doc['tid']} is state {doc['state']} after SIGTERM")
        if doc.get("requeue_reason") != "worker stopped by signal" or doc.get("attempts"):
            report.problems.append(f"trial {doc['tid']} was not requeued gracefully: {doc}")


# --- CLI -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.faults",
        description="Kill, restart and signal real Strix processes mid-study; check the study.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenarios", default="A,B,C", help="any of A,B,C (default all)")
    p.add_argument("--trials", type=int, help="trials per scenario (default 30/20/12)")
    p.add_argument("--kills", type=int, default=10, help="A: kill -9 this many times")
    p.add_argument("--every", type=float, default=1.5, help="A: seconds between kills")
    p.add_argument("--sleep", type=float, default=1.0, help="toy trial length, s")
    p.add_argument("--down", type=float, default=0.0, help="B: seconds the server stays down")
    p.add_argument("--robust", action="store_true", help="B: rerun the coordinator on errors")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    size = {"trials": args.trials} if args.trials else {}
    runs = {
        "A": lambda d: scenario_kill(
            d, kills=args.kills, every_s=args.every, sleep_s=args.sleep, **size
        ),
        "B": lambda d: scenario_restart(
            d, down_s=args.down, robust=args.robust, sleep_s=args.sleep, **size
        ),
        "C": lambda d: scenario_sigterm(d, sleep_s=args.sleep, **size),
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
            reports.append(runs[name](Path(tmp)))
        print(reports[-1].line(), flush=True)
        for kind, tbs in reports[-1].facts.get("tracebacks", {}).items():
            for tb in tbs:
                print(f"--- {kind}:\n{tb}", file=sys.stderr)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
