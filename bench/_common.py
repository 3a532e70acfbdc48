"""Helpers the benchmarks share: real worker processes, tables, percentiles, /proc readings,
and :class:`Harness`, a study with real workers on a real server for fault injection.

Benchmarks run from the repository root (``python -m bench.NAME``); the ``bench`` folder is
not installed, so every child process is started with the repository root as its working
directory and on its ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from subprocess import Popen
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "out" / "bench"  # /out/ is git-ignored


def setup_logging(verbose: bool = False) -> None:
    """Entry points only: one line per record, quiet third-party loggers."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("hyperopt", "absl", "pymongo", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process that imports ``bench``, ``shared`` or ``worker``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    paths = [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return {**env, **(extra or {})}


def spawn_worker(
    url: str, db: str, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """One ``python -m worker`` process, logging to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    cmd = [sys.executable, "-m", "worker", "--mongo", url, "--db", db, *args]
    try:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(env), cwd=ROOT
        )
    finally:
        out.close()


def wait_for_log(
    proc: subprocess.Popen, log_path: Path, needle: str, timeout: float = 120.0
) -> None:
    """Block until ``needle`` appears in the log; RuntimeError if the process dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_path.exists() and needle in log_path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode}:\n{tail}")
        time.sleep(0.05)
    raise RuntimeError(f"process {proc.pid} did not log {needle!r} within {timeout:.0f}s")


def stop_procs(procs: Iterable[subprocess.Popen], timeout: float = 30.0) -> None:
    """SIGTERM, wait, then SIGKILL what is left: only the processes we started."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]; NaN for no values."""
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return data[low] + (data[high] - data[low]) * (pos - low)


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A plain fixed-width table (markdown-compatible) of ``rows``."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    return "\n".join([line, rule, *body])


def machine() -> dict[str, Any]:
    """What the figures were measured on, for the JSON output and the docs."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = ""
    if shutil.which("nvidia-smi"):
        res = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        gpus = "; ".join(res.stdout.strip().splitlines())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return {
        "date": date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpus": gpus or "none",
        "python": platform.python_version(),
        "load_1min_at_start": round(load, 2),
    }


def smaps_rollup(pid: int) -> dict[str, int]:
    """Rss, Pss, Private_* (kB) of one process from ``/proc/<pid>/smaps_rollup``."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0])
    out["Private"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def save_json(path: str | Path | None, payload: dict) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    print(f"saved {path}")


# --- a study with real workers, for fault injection ------------------------------------------


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
        from shared.embedded import free_port, start_embedded

        self.work_dir, self.heartbeat, self.max_attempts = work_dir, heartbeat, max_attempts
        self.server = None
        if url is None:
            self.server = start_embedded(work_dir / "nx", port=free_port())
            url = self.server.url
        self.url, self.db = url, db or f"faults_{uuid.uuid4().hex[:8]}"
        self.exp_key = "faults"
        self.env = {"STRIX_HOST": f"faults-{uuid.uuid4().hex[:6]}"}
        if fake_gpus:
            self.env["STRIX_FAKE_GPUS"] = str(fake_gpus)
        flags = {
            "--exp-key": self.exp_key,
            "--heartbeat": heartbeat,
            "--poll-cap": 0.25,
            "--max-attempts": max_attempts,
            "--gpu-capacity": capacity,
            "--poll-interval": 0.02,
        }
        self.args = [str(x) for pair in flags.items() for x in pair]
        self.workers: list[Popen] = []  # alive, as far as we know
        self.exited: dict[int, int] = {}  # pid -> exit code of workers we stopped or lost
        self.logs: dict[int, Path] = {}  # pid -> its log file
        self.spawned = 0
        self.study_thread: threading.Thread | None = None
        self.study_errors: list[str] = []  # what ended the coordinator
        self.recovered: list[str] = []  # store errors the robust loop rode out
        from shared.store import connect

        self.store = connect(self.url, self.db)
        self.store.create_indexes()

    @property
    def grace(self) -> float:
        return 3.0 * self.heartbeat

    # --- workers --------------------------------------------------------------------------
    def spawn(self, n: int = 1, wait: bool = True) -> list[Popen]:
        new = []
        for _ in range(n):
            path = self.work_dir / "logs" / f"worker-{self.spawned}.log"
            self.spawned += 1
            new.append((spawn_worker(self.url, self.db, self.args, path, self.env), path))
        if wait:
            for proc, path in new:
                wait_for_log(proc, path, "ready on")
        self.workers += [p for p, _ in new]
        self.logs.update({p.pid: path for p, path in new})
        return [p for p, _ in new]

    def log_tail(self, pid: int, lines: int = 15) -> str:
        path = self.logs.get(pid)
        text = path.read_text(errors="replace") if path and path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def reap_exits(self) -> None:
        for p in list(self.workers):
            if p.poll() is not None:
                self.workers.remove(p)
                self.exited[p.pid] = p.returncode

    def running(self) -> list[dict]:
        return self.store.find_jobs(
            {"exp_key": self.exp_key, "state": 1}, projection=["tid", "owner"]
        )

    def held_by(self, pid: int) -> list[int]:
        """tids still RUNNING under worker ``pid`` (owner is ``host:pid:token``)."""
        return [
            j["tid"]
            for j in self.running()
            if str(j.get("owner", "")).split(":")[1:2] == [str(pid)]
        ]

    # --- the study ------------------------------------------------------------------------
    def start_study(self, n: int, sleep_s: float, robust: bool = False) -> None:
        from coordinator.study import Study
        from shared.jobs import toy_objective, toy_space

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
        self.study_thread.start()

    def _drive(self, study: Any, robust: bool) -> None:
        """``coordinator.study.run``; with ``robust``, the bench's own loop that rides out
        store errors (reaping is skipped, a Poster that died of one is started again)."""
        from coordinator.study import run

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
        from coordinator.study import Poster
        from shared.errors import StoreError

        poster = Poster(study)
        poster.start()
        while poster.is_alive() or (poster.error is not None and restarts > 0):
            poster.join(0.25)
            try:
                study.store.reap(self.grace, self.max_attempts)
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(step)
        return False

    # --- the end ------------------------------------------------------------------------
    def verify(self, n: int, report: Report) -> None:
        """The invariants every scenario must keep; problems go into ``report``."""
        docs = self.store.find_jobs({"exp_key": self.exp_key})
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
