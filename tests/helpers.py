"""Small helpers for tests that post real jobs and run real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from shared.store import Store

ROOT = Path(__file__).resolve().parents[1]


def insert_toy_jobs(store: Store, exp_key: str, n: int, resource: str = "light") -> list[int]:
    """Post ``n`` NEW jobs with hyperopt's own doc layout (no Domain attached)."""
    trials = store.trials(exp_key, resource=resource, refresh=False)
    tids = trials.new_trial_ids(n)
    miscs = [
        {
            "tid": t,
            "cmd": ("domain_attachment", "FMinIter_Domain"),
            "workdir": None,
            "idxs": {"x": [t]},
            "vals": {"x": [0.5]},
        }
        for t in tids
    ]
    docs = trials.new_trial_docs(tids, [None] * n, [{"status": "new"}] * n, miscs)
    trials.insert_trial_docs(docs)
    return tids


def post_toy(store: Store, exp_key: str, n: int, sleep_s: float = 0.0) -> list[int]:
    """Post ``n`` toy trials exactly as ``fmin`` would (Domain attached), without waiting."""
    import cloudpickle
    from hyperopt import base, rand

    from shared.jobs import toy_objective, toy_space

    trials = store.trials(exp_key, refresh=False)
    domain = base.Domain(toy_objective, toy_space(sleep_s))
    trials.attachments["FMinIter_Domain"] = cloudpickle.dumps(domain)
    docs = rand.suggest(trials.new_trial_ids(n), domain, trials, 1)
    trials.insert_trial_docs(docs)
    return [d["tid"] for d in docs]


def job_of(store: Store, exp_key: str) -> dict:
    """The single job of a study."""
    (doc,) = store.find_jobs({"exp_key": exp_key})
    return doc


def start_worker(
    url: str, db: str, *args: str, env: dict | None = None, log: Path | None = None
) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    cmd = [sys.executable, "-m", "worker", "--mongo", url, "--db", db, *args]
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)


def stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
