"""Small helpers for tests that post real jobs and run real worker processes.

Worker processes are started, awaited and stopped by :mod:`coordinator.study.procs`, as the
coordinator and the benchmarks do; ``wait_until`` is re-exported from there.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from coordinator.study.procs import spawn_worker, stop_procs, wait_until
from shared.store import Store

ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "ROOT",
    "insert_toy_jobs",
    "job_of",
    "post_toy",
    "start_worker",
    "stop_all",
    "wait_until",
]


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

    from shared.training.jobs import toy_objective, toy_space

    trials = store.trials(exp_key, refresh=False)
    domain = base.Domain(toy_objective, toy_space(sleep_s))
    trials.attachments["FMinIter_Domain"] = cloudpickle.dumps(domain)
    docs = rand.suggest(trials.new_trial_ids(n), domain, trials, 1)
    trials.insert_trial_docs(docs)
    return [d["tid"] for d in docs]


def job_of(store: Store, exp_key: str) -> dict:
    """The single job of a study."""
    (doc,) = store.trials_in(exp_key)
    return doc


def start_worker(
    url: str, db: str, *args: str, env: dict | None = None, log: Path | None = None
) -> subprocess.Popen:
    """``python -m worker --mongo url --db db args`` from the repository root."""
    return spawn_worker(url, db, args, log_path=log, env=env, cwd=ROOT)


def stop_all(procs: list[subprocess.Popen]) -> None:
    stop_procs(procs, timeout=30)
