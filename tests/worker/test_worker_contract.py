"""The worker's contract under stress: real worker processes, real signals, real server.

Each test here failed before the fix it guards: the heartbeat thread died on the first
non-store error, a rejected finish was logged as a success, and a second SIGTERM left the
``--isolate`` trial process running.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from shared.store import State, Store
from tests.helpers import job_of, post_toy, start_worker, stop_all, wait_until


def _running(store: Store, exp_key: str) -> bool:
    return job_of(store, exp_key)["state"] == State.RUNNING


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_heartbeat_survives_failing_beats_and_keeps_its_trial(
    store: Store, mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    """Deleting the GPU documents makes every lease renewal fail while a trial runs; the
    job's own heartbeat must carry on, so the reaper never takes the trial away."""
    post_toy(store, "beats", 1, sleep_s=6.0)
    log = tmp_path / "worker.log"
    args = ("--heartbeat", "0.3", "--grace", "1.5", "--max-jobs", "1", "--poll-interval", "0.02")
    worker = start_worker(mongo_url, db_name, *args, env={"STRIX_FAKE_GPUS": "1"}, log=log)
    try:
        assert wait_until(lambda: _running(store, "beats"), 60), log.read_text()
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:  # beats fail for a while...
            store.gpus.delete_many({})
            store.reap(max_attempts=3)  # ...while a reaper watches
            time.sleep(0.1)
        assert worker.wait(60) == 0, log.read_text()
    finally:
        stop_all([worker])
    doc = job_of(store, "beats")
    text = log.read_text()
    assert doc["state"] == State.DONE and not doc.get("attempts"), text
    assert doc["result"]["status"] == "ok"
    assert "heartbeat failed (StoreError: GPU" in text, text


def test_a_rejected_finish_is_reported_and_not_counted(
    store: Store, mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    post_toy(store, "taken", 1, sleep_s=3.0)
    log = tmp_path / "worker.log"
    args = ("--heartbeat", "0.3", "--grace", "1", "--max-jobs", "1", "--poll-interval", "0.02")
    worker = start_worker(mongo_url, db_name, *args, log=log)
    try:
        assert wait_until(lambda: _running(store, "taken"), 60), log.read_text()
        os.kill(worker.pid, signal.SIGSTOP)  # it stalls past its own grace...
        try:
            assert wait_until(lambda: store.reap(max_attempts=3), 30), "never presumed dead"
            assert store.reserve("intruder", "taken", ["light"]) is not None
        finally:
            os.kill(worker.pid, signal.SIGCONT)  # ...and wakes up to a trial that is not its own
        assert wait_until(lambda: "taken over by" in log.read_text(), 30), log.read_text()
        time.sleep(1.0)
        assert worker.poll() is None, "a dropped result must not count toward --max-jobs"
    finally:
        stop_all([worker])
    text = log.read_text()
    assert "was taken over by intruder; this worker's result was dropped" in text, text
    assert " ok: loss=" not in text and "stopped after 0 trial(s)" in text, text
    doc = job_of(store, "taken")
    assert doc["owner"] == "intruder" and doc["state"] == State.RUNNING
    assert doc["result"] == {"status": "new"}, "the dropped result was never written"


def test_second_signal_kills_and_reaps_the_isolated_trial(
    store: Store, mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    post_toy(store, "iso2", 1, sleep_s=120.0)
    log = tmp_path / "worker.log"
    worker = start_worker(mongo_url, db_name, "--isolate", "--poll-interval", "0.02", log=log)
    try:
        assert wait_until(lambda: "runs in child process" in log.read_text(), 90), log.read_text()
        child = int(log.read_text().split("runs in child process ")[1].split()[0])
        assert _alive(child)
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 1
        assert wait_until(lambda: not _alive(child), 3), "the trial process outlived its worker"
    finally:
        stop_all([worker])
        if _alive(child):
            os.kill(child, signal.SIGKILL)
