"""``python -m bench.faults.chaos``: a study under chaos for a fixed time, and what survived.

Several simulated hosts on this machine, each with its own host name, its own wall clock
(skewed by minutes through ``skewclock/sitecustomize.py``) and its own heartbeat, run real
``python -m worker`` processes against the embedded MongoDB (nx-27017) while the real
coordinator loop posts toy trials (``toy_objective``: a sleep; one toy epoch = 1 s). Every
``--tick`` seconds, with probability ``p`` each: one random worker is ``kill -9``-ed, and
another gets SIGTERM with a ``--warning`` (it is killed if still alive after it), as a spot
instance is. MongoDB is restarted now and then. Dead workers are replaced at once.

Reported: trials completed, lost (left NEW/RUNNING after the drain, or a tid twice), run
twice at the same time (from the workers' logs, on the real clock), ERRORed while their
holder lived, and trial-epochs thrown away. The goal is 0, 0, 0 for 30 minutes at p = 0.05.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

from bench._common import ROOT, add_quick, make_parser, parse, setup_logging
from bench.faults import runs as runlog
from bench.faults.harness import Harness, worker_flags
from shared.store import State

log = logging.getLogger(__name__)
SKEW_DIR = Path(__file__).resolve().parent / "skewclock"
QUICK = {"minutes": 1.5, "p": 0.3, "tick": 5, "warning": 10, "restart_every": 40, "down": 1,
         "sleep": 2}  # fmt: skip
EXAMPLES = """
  python -m bench.faults.chaos                       # 30 minutes at p = 0.05
  python -m bench.faults.chaos --quick                                  # 1.5 minutes, p = 0.3
  python -m bench.faults.chaos --minutes 5 --p 0.2 --restart-every 60
  nohup python -m bench.faults.chaos > chaos.log 2>&1 &                 # in the background
"""


@dataclass(frozen=True)
class Host:
    """A simulated host: its name, how wrong its clock is, its heartbeat, its workers."""

    name: str
    skew_s: float
    heartbeat: float
    workers: int


HOSTS = (
    Host("chaos-slow", -600.0, 1.0, 2),  # 10 minutes behind, beats every second
    Host("chaos-fast", +600.0, 2.0, 1),  # 10 minutes ahead
    Host("chaos-ntp", 0.0, 3.0, 1),
)


@dataclass
class Plan:
    minutes: float = 30.0
    p: float = 0.05
    tick_s: float = 10.0
    warning_s: float = 30.0
    restart_every_s: float = 300.0  # mean time between MongoDB restarts
    down_s: float = 2.0
    sleep_s: float = 6.0  # one toy trial
    max_attempts: int = 25
    seed: int = 0


@dataclass
class Proc:
    popen: Popen
    host: Host
    killed_at: float | None = None  # real epoch seconds of our SIGKILL
    term_deadline: float | None = None  # monotonic: SIGKILL if still alive then


FAULTS = ("kills", "sigterms", "mongodb_restarts", "coordinator_restarts")


@dataclass
class Tally:
    """What the run did to the cluster: counts by fault ("kills", "sigterms", ...) and a log."""

    counts: Counter[str] = field(default_factory=Counter)
    events: list[str] = field(default_factory=list)


class Chaos:
    """The hosts' workers, the faults, and the coordinator thread, on one harness."""

    def __init__(self, h: Harness, plan: Plan, hosts: tuple[Host, ...] = HOSTS) -> None:
        self.h, self.plan, self.hosts = h, plan, hosts
        self.rng = random.Random(plan.seed)
        self.procs: list[Proc] = []
        self.tally = Tally()
        self.done = threading.Event()

    # --- workers ----------------------------------------------------------------------
    def spawn(self, host: Host, wait: bool = False) -> None:
        path = os.pathsep.join([str(SKEW_DIR), str(ROOT), os.environ.get("PYTHONPATH", "")])
        env = {"STRIX_HOST": host.name, "STRIX_CLOCK_SKEW": str(host.skew_s), "PYTHONPATH": path}
        args = worker_flags(self.h.exp_key, host.heartbeat, self.plan.max_attempts, 4)
        (p,) = self.h.spawn(1, wait=wait, args=args, env=env)
        self.procs.append(Proc(p, host))

    def live(self) -> list[Proc]:
        return [p for p in self.procs if p.popen.poll() is None and p.killed_at is None]

    def replace_dead(self) -> None:
        for host in self.hosts:
            alive = [p for p in self.live() if p.host is host and p.term_deadline is None]
            for _ in range(host.workers - len(alive)):
                self.spawn(host)

    # --- faults -----------------------------------------------------------------------
    def kill(self, proc: Proc, why: str) -> None:
        proc.killed_at = time.time()
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait()
        self.tally.counts["kills"] += 1
        self.note(f"kill -9 {proc.host.name} pid {proc.popen.pid} ({why})")

    def tick(self) -> None:
        """One chaos step: maybe a kill -9, maybe a SIGTERM with a warning."""
        calm = [p for p in self.live() if p.term_deadline is None]
        if calm and self.rng.random() < self.plan.p:
            self.kill(self.rng.choice(calm), "random")
            calm = [p for p in self.live() if p.term_deadline is None]
        if calm and self.rng.random() < self.plan.p:
            proc = self.rng.choice(calm)
            proc.term_deadline = time.monotonic() + self.plan.warning_s
            proc.popen.send_signal(signal.SIGTERM)
            self.tally.counts["sigterms"] += 1
            self.note(f"SIGTERM {proc.host.name} pid {proc.popen.pid}")

    def enforce_warnings(self) -> None:
        for proc in self.live():
            if proc.term_deadline is not None and time.monotonic() > proc.term_deadline:
                self.kill(proc, f"still alive {self.plan.warning_s:g}s after SIGTERM")

    def restart_server(self) -> None:
        from shared.store.embedded import start_embedded

        server = self.h.server
        assert server is not None, "only a server the harness owns can be restarted"
        server.stop()
        time.sleep(self.plan.down_s)
        self.h.server = start_embedded(server.data_dir, server.host, server.port)
        self.tally.counts["mongodb_restarts"] += 1
        self.note(f"MongoDB restarted (down {self.plan.down_s:g}s)")

    def note(self, event: str) -> None:
        self.tally.events.append(f"{time.strftime('%H:%M:%S')} {event}")
        log.info("%s", event)

    # --- the run ------------------------------------------------------------------------
    def run(self) -> None:
        """Faults for ``plan.minutes``; the coordinator stops posting then; all drains."""
        for host in self.hosts:
            for _ in range(host.workers):
                self.spawn(host, wait=True)
        coordinator = threading.Thread(target=self.coordinate, name="coordinator")
        coordinator.start()
        end = time.monotonic() + self.plan.minutes * 60
        next_tick = time.monotonic() + self.plan.tick_s
        next_restart = time.monotonic() + self._restart_gap()
        while time.monotonic() < end and coordinator.is_alive():
            time.sleep(0.5)
            self.enforce_warnings()
            self.replace_dead()
            if time.monotonic() >= next_tick:
                next_tick += self.plan.tick_s
                self.tick()
            if time.monotonic() >= next_restart:
                next_restart = time.monotonic() + self._restart_gap()
                self.restart_server()
        self.note("chaos over: draining")
        while coordinator.is_alive():  # the last trials finish on the workers left
            coordinator.join(0.5)
            self.enforce_warnings()
            self.replace_dead()

    def _restart_gap(self) -> float:
        return self.rng.uniform(0.5, 1.5) * self.plan.restart_every_s

    def coordinate(self) -> None:
        """The real coordinator loop, restarted (resuming by exp_key) if it ever fails."""
        from coordinator.study.limits import StudyLimits
        from coordinator.study.study import Study, run
        from shared.training.jobs import toy_objective, toy_space

        deadline = time.monotonic() + self.plan.minutes * 60
        n_workers = sum(h.workers for h in self.hosts)
        while True:
            left = max(1.0, deadline - time.monotonic())
            study = Study(self.h.store, self.h.exp_key, toy_objective,
                          toy_space(self.plan.sleep_s), 1_000_000, algo="rand",
                          max_queue_len=n_workers + 2, seed=self.plan.seed,
                          limits=StudyLimits(timeout_s=left))  # fmt: skip
            try:
                run(study, grace=10.0, max_attempts=self.plan.max_attempts, progress=False)
                return
            except Exception:
                self.tally.counts["coordinator_restarts"] += 1
                self.note("coordinator failed, restarting it: " + traceback.format_exc(limit=1))
                time.sleep(2.0)


# --- what survived ----------------------------------------------------------------------
def analyse(chaos: Chaos) -> dict:
    """The figures: from the store (states, attempts) and the logs (runs, real clock)."""
    h = chaos.h
    docs = h.store.trials_in(h.exp_key, fields=["tid", "state", "owner", "attempts", "error"])
    tids = [d["tid"] for d in docs]
    states = [d["state"] for d in docs]
    killed = {str(p.popen.pid) for p in chaos.procs if p.killed_at is not None}
    errored_alive = [
        d["tid"] for d in docs if d["state"] == State.ERROR and _pid(d.get("owner")) not in killed
    ]
    runs: list[runlog.Run] = []
    now = time.time()
    for proc in chaos.procs:
        text = h.log_tail(proc.popen.pid, lines=10**9)
        pid = str(proc.popen.pid)
        runs += runlog.runs_in_log(text, pid, proc.host.skew_s, proc.killed_at, now)
    twice = runlog.concurrent(runs)
    return {
        "completed": states.count(State.DONE),
        "lost": states.count(State.NEW) + states.count(State.RUNNING) + len(tids) - len(set(tids)),
        "run_twice_concurrently": len(twice),
        "errored": states.count(State.ERROR),
        "errored_while_holder_lived": len(errored_alive),
        "trial_epochs_thrown_away": round(runlog.thrown_away_s(runs)),
        "reaped_runs": sum(int(d.get("attempts") or 0) for d in docs),
        **{k: chaos.tally.counts[k] for k in FAULTS},
        "workers_started": len(chaos.procs),
        "twice_detail": _detail(twice),
    }


def _detail(twice: dict[int, list[runlog.Run]]) -> dict:
    """The first few overlapping runs: tid -> (pid, start, end) on the real clock."""
    pick = list(twice.items())[:5]
    return {t: [(r.proc, round(r.start, 2), round(r.end, 2)) for r in rs] for t, rs in pick}


def _pid(owner: object) -> str:
    """The pid in a worker id ``host:pid:uuid`` ("" for none)."""
    parts = str(owner or "").split(":")
    return parts[1] if len(parts) > 2 else ""


def ok(figures: dict) -> bool:
    keys = ("lost", "run_twice_concurrently", "errored_while_holder_lived")
    return all(figures[k] == 0 for k in keys)


def run_chaos(plan: Plan, work_dir: Path, hosts: tuple[Host, ...] = HOSTS) -> dict:
    """One chaos run on an embedded server of its own; returns the figures."""
    h = Harness(work_dir, max_attempts=plan.max_attempts, fake_gpus=1, capacity=4)
    chaos = Chaos(h, plan, hosts)
    started = time.monotonic()
    try:
        chaos.run()
        figures = analyse(chaos)
    finally:
        for proc in chaos.live():
            proc.popen.terminate()
        h.close()
    figures["seconds"] = round(time.monotonic() - started)
    return figures


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("python -m bench.faults.chaos", __doc__.splitlines()[0], EXAMPLES)
    p.add_argument("--minutes", type=float, default=30.0, help="how long faults are injected")
    p.add_argument("--p", type=float, default=0.05, help="probability of each fault per tick")
    p.add_argument("--tick", type=float, default=10.0, help="seconds between fault draws")
    p.add_argument("--warning", type=float, default=30.0, help="SIGTERM-to-SIGKILL seconds")
    p.add_argument("--restart-every", type=float, default=300.0,
                   help="mean seconds between MongoDB restarts")  # fmt: skip
    p.add_argument("--down", type=float, default=2.0, help="seconds MongoDB stays down")
    p.add_argument("--sleep", type=float, default=6.0, help="seconds of one toy trial")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--work-dir", type=Path, default=None, help="logs and data (default: a temp dir)"
    )
    add_quick(p, QUICK)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv, QUICK)
    setup_logging()
    plan = Plan(args.minutes, args.p, args.tick, args.warning, args.restart_every, args.down,
                args.sleep, seed=args.seed)  # fmt: skip
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="strix-chaos-"))
    print(f"chaos: {plan} on hosts {[(h.name, h.skew_s, h.heartbeat) for h in HOSTS]}")
    print(f"logs in {work_dir}", flush=True)
    figures = run_chaos(plan, work_dir)
    for key, value in figures.items():
        print(f"{key}: {value}")
    print("PASS" if ok(figures) else "FAIL")
    return 0 if ok(figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
