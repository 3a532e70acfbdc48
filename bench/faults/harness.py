"""A study with real workers on a real server, for fault injection (``bench.faults`` and
``tests/bench/test_faults.py``): :class:`Harness` owns the server (or uses a given one), the
worker processes and the coordinator thread; :class:`Report` is what a scenario found.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any

from bench._common import QUIET_TF, ROOT
from coordinator.study.procs import log_text, spawn_worker, stop_procs, wait_for_log, wait_until
from shared.store import State

log = logging.getLogger(__name__)


@dataclass
class Report:
    """The outcome of one scenario: ``ok`` and a one-line summary, details for tests."""

    name: str
    trials: int
    ok: bool = False
    seconds: float = 0.0
    counts: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    def line(self) -> str:
        facts = ", ".join(f"{k}={v}" for k, v in self.facts.items() if not isinstance(v, dict))
        head = f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.counts.get('done', 0)}/"
        tail = f"; problems: {' | '.join(self.problems)}" if self.problems else ""
        return f"{head}{self.trials} DONE in {self.seconds:.1f}s ({facts}){tail}"


def worker_flags(exp_key: str, heartbeat: float, max_attempts: int, capacity: int) -> list[str]:
    """Fast-polling workers with a short heartbeat, so faults show up within seconds."""
    flags = {
        "--exp-key": exp_key,
        "--heartbeat": heartbeat,
        "--poll-cap": 0.25,
        "--max-attempts": max_attempts,
        "--gpu-capacity": capacity,
        "--poll-interval": 0.02,
    }
    return [str(x) for pair in flags.items() for x in pair]


class Harness:
    """A MongoDB (given, or an embedded one this harness owns), a study and its workers."""

    def __init__(
        self,
        work_dir: Path,
        url: str | None = None,
        db: str | None = None,
        heartbeat: float = 0.5,
        max_attempts: int = 20,
        fake_gpus: int = 1,
        capacity: int = 8,
    ) -> None:
        from shared.store import connect
        from shared.store.embedded import free_port, start_embedded

        self.work_dir, self.heartbeat, self.max_attempts = work_dir, heartbeat, max_attempts
        self.server = None
        if url is None:
            self.server = start_embedded(work_dir / "nx", port=free_port())
            url = self.server.url
        self.url: str = url
        self.db, self.exp_key = db or f"faults_{uuid.uuid4().hex[:8]}", "faults"
        self.env = {**QUIET_TF, "STRIX_HOST": f"faults-{uuid.uuid4().hex[:6]}"}
        if fake_gpus:
            self.env["STRIX_FAKE_GPUS"] = str(fake_gpus)
        self.args = worker_flags(self.exp_key, heartbeat, max_attempts, capacity)
        self.workers: list[Popen] = []  # alive, as far as we know
        self.exited: dict[int, int] = {}  # pid -> exit code of workers we stopped or lost
        self.logs: dict[int, Path] = {}  # pid -> its log file
        self.spawned = 0
        self.study_thread: threading.Thread | None = None
        self.started = time.monotonic()  # reset when the study starts
        self.study_errors: list[str] = []  # what ended the coordinator
        self.recovered: list[str] = []  # store errors the robust loop rode out
        self.store = connect(self.url, self.db)
        self.store.create_indexes()

    @property
    def grace(self) -> float:
        return 3.0 * self.heartbeat

    # --- workers --------------------------------------------------------------------------
    def spawn(
        self, n: int = 1, wait: bool = True, args: list[str] | None = None, env: dict | None = None
    ) -> list[Popen]:
        """``n`` workers with the harness's flags and environment (or these ``args``/``env``:
        a simulated host of its own)."""
        args, env = args or self.args, {**self.env, **(env or {})}
        new = []
        for _ in range(n):
            path = self.work_dir / "logs" / f"worker-{self.spawned}.log"
            self.spawned += 1
            new.append((spawn_worker(self.url, self.db, args, path, env, ROOT), path))
        if wait:
            for proc, path in new:
                wait_for_log(proc, path, "ready on")
        self.workers += [p for p, _ in new]
        self.logs.update({p.pid: path for p, path in new})
        return [p for p, _ in new]

    def log_tail(self, pid: int, lines: int = 15) -> str:
        path = self.logs.get(pid)
        text = log_text(path) if path else ""
        return "\n".join(text.splitlines()[-lines:])

    def reap_exits(self) -> None:
        for p in list(self.workers):
            if p.poll() is not None:
                self.workers.remove(p)
                self.exited[p.pid] = p.returncode

    def running(self) -> list[dict]:
        return self.store.trials_in(self.exp_key, states=[State.RUNNING], fields=["owner"])

    def held_by(self, pid: int) -> list[int]:
        """tids still RUNNING under worker ``pid`` (owner is ``host:pid:token``)."""
        return [
            j["tid"]
            for j in self.running()
            if str(j.get("owner", "")).split(":")[1:2] == [str(pid)]
        ]

    def trials(self, tids: list[int] | None = None) -> dict[int, dict]:
        """The study's trial documents (only ``tids`` when given), by tid."""
        return {d["tid"]: d for d in self.store.trials_in(self.exp_key, tids=tids)}

    # --- the study ------------------------------------------------------------------------
    def start_study(self, n: int, sleep_s: float, robust: bool = False) -> None:
        from coordinator.study.study import Study
        from shared.training.jobs import toy_objective, toy_space

        study = Study(
            self.store,
            self.exp_key,
            toy_objective,
            toy_space(sleep_s),
            n,
            algo="rand",
            max_queue_len=max(4, n),
            seed=0,
        )
        self.study_thread = threading.Thread(target=self._drive, args=(study, robust))
        self.started = time.monotonic()
        self.study_thread.start()

    def _drive(self, study: Any, robust: bool) -> None:
        """``coordinator.study.study.run``; with ``robust``, the bench's own loop that rides out
        store errors (reaping is skipped, a Poster that died of one is started again)."""
        from coordinator.study.study import run

        try:
            if robust:
                self._robust_run(study)
            else:
                run(
                    study,
                    grace=self.grace,
                    max_attempts=self.max_attempts,
                    progress=False,
                    interval=0.25,
                )
        except BaseException:
            self.study_errors.append(traceback.format_exc())

    def _robust_run(self, study: Any, restarts: int = 5) -> None:
        from coordinator.study.study import Poster
        from shared.errors import StoreError

        poster = Poster(study)
        poster.start()
        while poster.is_alive() or (poster.error is not None and restarts > 0):
            poster.join(0.25)
            try:
                study.store.reap(self.max_attempts)
            except StoreError:
                self.recovered.append(traceback.format_exc())
                continue
            if not poster.is_alive() and poster.error is not None and restarts > 0:
                err = poster.error
                self.recovered.append("".join(traceback.format_exception(err)))
                restarts -= 1
                poster = Poster(study)
                poster.start()
        if poster.error is not None:
            raise poster.error

    def study_done(self) -> bool:
        return self.study_thread is not None and not self.study_thread.is_alive()

    def counts(self) -> dict[str, int]:
        return self.store.counts(self.exp_key)

    def wait(self, predicate: Any, timeout: float, step: float = 0.05) -> bool:
        return wait_until(predicate, timeout, step)

    # --- the end ------------------------------------------------------------------------
    def verify(self, n: int, report: Report) -> None:
        """The invariants every scenario must keep; problems go into ``report``."""
        docs = self.store.trials_in(self.exp_key)
        report.counts = self.counts()
        tids = [d.get("tid") for d in docs]
        problems = report.problems
        if len(docs) != n:
            problems.append(f"{len(docs)} trial documents, expected {n}")
        if len(set(tids)) != len(tids):
            problems.append(f"duplicated tids: {sorted(t for t in set(tids) if tids.count(t) > 1)}")
        for state in ("new", "running", "error"):
            if report.counts.get(state):
                problems.append(f"{report.counts[state]} trial(s) left {state.upper()}")
        bad = [d.get("tid") for d in docs if (d.get("result") or {}).get("status") != "ok"]
        if bad and not report.counts.get("error"):
            problems.append(f"trials without an ok result: {bad}")
        if self.study_errors:
            problems.append("coordinator raised: " + self.study_errors[-1].strip().splitlines()[-1])
        report.facts["max_attempts_seen"] = max((d.get("attempts") or 0 for d in docs), default=0)
        report.facts["requeues"] = sum(d.get("requeues") or 0 for d in docs)

    def close(self) -> None:
        stop_procs(self.workers)
        if self.study_thread is not None:
            self.study_thread.join(5)
        try:
            self.store.client.drop_database(self.db)
        finally:
            self.store.close()
            if self.server is not None:
                self.server.stop()
