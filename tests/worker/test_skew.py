"""Leases under clock skew and mixed settings, with real worker processes.

Each worker's wall clock is shifted by minutes (``bench/faults/skewclock``'s
``sitecustomize.py`` on its ``PYTHONPATH``) and each has its own heartbeat. A lease must be
decided by the server's clock and the holder's own grace: no live trial is reaped, and a
dead holder's trial is reaped within that holder's grace, whoever reaps it.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path
from subprocess import Popen

import pytest

from coordinator.study.procs import spawn_worker, stop_procs, wait_for_log
from coordinator.study.study import Study
from coordinator.study.study import run as run_study
from shared.store import JOB_STATE_DONE, State, Store
from shared.training.jobs import toy_objective, toy_space
from tests.helpers import ROOT, post_toy, wait_until

pytestmark = pytest.mark.slow
SKEW_DIR = ROOT / "bench" / "faults" / "skewclock"


def _worker(
    url: str,
    db: str,
    key: str,
    skew: float,
    heartbeat: float,
    log: Path,
    env: dict | None = None,
    extra: tuple[str, ...] = (),
) -> Popen:
    env = {
        "PYTHONPATH": os.pathsep.join([str(SKEW_DIR), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "STRIX_CLOCK_SKEW": str(skew),
        "STRIX_HOST": f"skew{skew:+.0f}",
        **(env or {}),
    }
    args = ["--exp-key", key, "--heartbeat", heartbeat, "--poll-interval", "0.05"]
    args += ["--poll-cap", "0.2", "--max-attempts", "10", *extra]
    proc = spawn_worker(url, db, args, log, env)
    wait_for_log(proc, log, "ready on")
    return proc


def _holder(store: Store, key: str) -> str | None:
    doc = store.jobs.find_one({"exp_key": key, "state": 1}, projection=["owner"])
    return None if doc is None else doc.get("owner")


def test_skewed_clocks_and_mixed_heartbeats_reap_no_live_trial(
    store: Store, mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    slow = _worker(mongo_url, db_name, "mix", -600, 1.0, tmp_path / "slow.log")
    fast = _worker(mongo_url, db_name, "mix", +600, 0.2, tmp_path / "fast.log")
    try:
        study = Study(
            store, "mix", toy_objective, toy_space(2.5), 6, algo="rand", max_queue_len=2, seed=1
        )
        # the coordinator beats (and used to reap) far faster than either worker
        run_study(study, grace=0.3, max_attempts=10, progress=False, interval=0.1)
    finally:
        stop_procs([slow, fast])
    docs = store.trials_in("mix")
    assert len(docs) == 6 and all(d["state"] == JOB_STATE_DONE for d in docs)
    reaped = [(d["tid"], d.get("requeue_reason")) for d in docs if d.get("attempts")]
    assert not reaped, f"live trials were reaped: {reaped}"


@pytest.mark.parametrize("holder_skew,reaper_skew", [(+600, -600), (-600, +600)])
def test_dead_holder_is_reaped_within_its_own_grace(
    store: Store,
    mongo_url: str,
    db_name: str,
    tmp_path: Path,
    holder_skew: float,
    reaper_skew: float,
) -> None:
    post_toy(store, "dead", 1, sleep_s=60)
    holder = _worker(mongo_url, db_name, "dead", holder_skew, 1.0, tmp_path / "h.log")  # grace 3 s
    reaper = None
    try:
        assert wait_until(lambda: _holder(store, "dead") is not None, 30)
        held_by = _holder(store, "dead")
        reaper = _worker(mongo_url, db_name, "dead", reaper_skew, 0.2, tmp_path / "r.log")
        time.sleep(5.0)  # longer than the holder's grace, and the reaper's many times over
        assert _holder(store, "dead") == held_by, "a live holder lost its trial"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        assert wait_until(lambda: _holder(store, "dead") != held_by, 30)
        waited = time.monotonic() - killed
        assert 1.5 <= waited <= 3.0 + 3.0, f"reaped {waited:.1f}s after the kill (grace 3 s)"
    finally:
        stop_procs([p for p in (holder, reaper) if p is not None])


def test_gpu_leases_hold_across_skewed_clocks_on_one_host(
    store: Store, mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    """Two workers of one host share a GPU of capacity 1, their clocks 20 minutes apart: the
    fast one must not see the slow one's lease as expired (two trials on the GPU at once)."""
    post_toy(store, "gpu", 2, sleep_s=10.0)
    gpu = {"STRIX_FAKE_GPUS": "1", "STRIX_HOST": "one-host"}
    extra = ("--gpu-capacity", "1")
    slow = _worker(mongo_url, db_name, "gpu", -600, 2.0, tmp_path / "slow.log", gpu, extra)
    procs = [slow]
    try:  # the slow clock holds the GPU; then the fast clock comes and wants it too
        assert wait_until(lambda: store.count("gpu", states=[State.RUNNING]) == 1, 60)
        procs.append(
            _worker(mongo_url, db_name, "gpu", 600, 2.0, tmp_path / "fast.log", gpu, extra)
        )
        assert wait_until(lambda: store.count("gpu", states=[State.DONE]) == 2, 120)
    finally:
        stop_procs(procs)
    skews = {p.pid: s for p, s in zip(procs, (-600, +600), strict=True)}
    runs = sorted(  # each trial's run on the real clock: its worker's skew taken off
        (
            d["result"]["start"] - skews[d["worker"]["pid"]],
            d["result"]["end"] - skews[d["worker"]["pid"]],
        )
        for d in store.trials_in("gpu")
    )
    overlaps = [(a, b) for a, b in itertools.pairwise(runs) if b[0] < a[1]]
    assert not overlaps, f"trials ran at once on a GPU of capacity 1: {overlaps}"
