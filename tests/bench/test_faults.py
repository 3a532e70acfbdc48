"""Fault injection with real worker processes: kill -9, SIGTERM, a MongoDB restart.

Every test runs real ``python -m worker`` processes and the real coordinator loop on a
real server, then checks the invariants that matter to a study: exactly N trials, all
DONE, no tid twice, nothing stuck, every lost run counted in ``attempts``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.faults.harness import Harness, Report
from bench.faults.scenarios import Setup, scenario_kill, scenario_restart, scenario_sigterm
from shared.store import State
from shared.store.embedded import EmbeddedServer

pytestmark = pytest.mark.slow


def _doc(h: Harness, tid: int) -> dict:
    (doc,) = h.trials([tid]).values()
    return doc


def _pid_of(doc: dict) -> int:
    return int(str(doc["owner"]).split(":")[1])


def _pid_of_or_none(doc: dict) -> int | None:
    return _pid_of(doc) if doc.get("owner") else None


def _assert_clean(h: Harness, n: int) -> None:
    report = Report("check", n)
    h.verify(n, report)
    assert not report.problems, report.problems


def test_kill9_mid_trial_is_requeued_after_grace_and_finished_elsewhere(
    mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    h = Harness(tmp_path, mongo_url, db_name, heartbeat=0.5, max_attempts=5, capacity=2)
    try:
        a, b = h.spawn(2)
        h.start_study(4, sleep_s=1.5)
        assert h.wait(lambda: h.held_by(a.pid), 60), "worker A never started a trial"
        (tid,) = h.held_by(a.pid)
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        killed = time.monotonic()
        assert h.wait(lambda: _pid_of_or_none(_doc(h, tid)) != a.pid, h.grace + 10)
        waited = time.monotonic() - killed
        # stale only once the last heartbeat is older than grace; reapers run every <= 0.5 s
        assert h.grace - h.heartbeat - 0.2 <= waited <= h.grace + 3.0, waited
        assert h.wait(h.study_done, 120)
        _assert_clean(h, 4)
        doc = _doc(h, tid)
        assert doc["state"] == State.DONE and _pid_of(doc) == b.pid
        assert doc.get("attempts", 0) >= 1
        assert "stopped sending heartbeats" in doc.get("requeue_reason", "")
    finally:
        h.close()


def test_sigterm_mid_trial_goes_back_to_new_and_finishes_elsewhere(
    mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    h = Harness(tmp_path, mongo_url, db_name, heartbeat=0.5, max_attempts=5, capacity=1)
    try:
        (a,) = h.spawn(1)
        h.start_study(3, sleep_s=2.0)
        assert h.wait(lambda: h.held_by(a.pid), 60), "worker A never started a trial"
        (tid,) = h.held_by(a.pid)
        a.send_signal(signal.SIGTERM)
        assert a.wait(30) == 0
        doc = _doc(h, tid)
        assert doc["state"] == State.NEW and doc.get("owner") is None
        assert doc.get("requeues") == 1 and not doc.get("attempts")
        assert doc.get("requeue_reason") == "worker stopped by signal"
        assert h.counts()["error"] == 0
        (b,) = h.spawn(1)
        assert h.wait(h.study_done, 120)
        _assert_clean(h, 3)
        doc = _doc(h, tid)
        assert doc["state"] == State.DONE and _pid_of(doc) == b.pid
        assert doc.get("requeues") == 1 and not doc.get("attempts")
    finally:
        h.close()


def test_scenario_a_kill9_workers_repeatedly(mongo_url: str, db_name: str, tmp_path: Path) -> None:
    setup = Setup(tmp_path, trials=10, workers=2, url=mongo_url, db=db_name, timeout=180)
    report = scenario_kill(setup, kills=3, every_s=0.8)
    assert report.ok, report.line()
    assert report.facts["kills"] == 3, report.line()
    assert report.facts["max_attempts_seen"] >= 1, report.line()


def test_scenario_c_sigterm_every_worker(mongo_url: str, db_name: str, tmp_path: Path) -> None:
    setup = Setup(tmp_path, trials=6, workers=2, url=mongo_url, db=db_name, timeout=180)
    report = scenario_sigterm(setup)
    assert report.ok, report.line()
    assert report.facts["exit_codes"] == [0, 0] and report.facts["requeued_trials"] == 2


def test_scenario_b_server_restart_workers_reconnect(tmp_path: Path) -> None:
    """Workers and the coordinator's own loop (``coordinator.study.study.run``) ride it out."""
    setup = Setup(tmp_path, trials=8, workers=2, sleep_s=0.5, timeout=180)
    report = scenario_restart(setup, down_s=1.0, robust=False)
    assert report.ok, report.line()
    assert report.facts["outage_s"] >= 1.0


# --- store outages: found by the fault runs, fixed, kept as regression tests -----------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    from shared.store.embedded import start_embedded

    server = start_embedded(tmp_path / "nx")
    yield server
    server.stop()


def _restart(server: EmbeddedServer, down_s: float) -> EmbeddedServer:
    from shared.store.embedded import start_embedded

    server.stop()
    time.sleep(down_s)
    return start_embedded(server.data_dir, server.host, server.port)


def test_worker_survives_a_store_outage_at_trial_start(
    own_server: EmbeddedServer, tmp_path: Path
) -> None:
    import cloudpickle
    from hyperopt import base

    from shared.store import connect
    from shared.training.jobs import toy_objective, toy_space
    from tests.helpers import insert_toy_jobs
    from worker.config import build_parser, resolve
    from worker.gpus import Inventory
    from worker.runner import Worker
    from worker.tenure import Active

    store = connect(own_server.url, "outage", timeout_ms=500)
    store.trials("k", refresh=False).attachments["FMinIter_Domain"] = cloudpickle.dumps(
        base.Domain(toy_objective, toy_space(0.0))
    )
    insert_toy_jobs(store, "k", 1)
    argv = ["--mongo", own_server.url, "--db", "outage", "--heartbeat", "0.2"]
    worker = Worker(resolve(build_parser().parse_args(argv)), store, Inventory(()))
    job = store.reserve(worker.id, "k", ["light"])
    own_server.stop()
    worker.run_job(Active(job, None))  # must not raise: the reaper requeues the trial


def test_coordinator_survives_a_store_restart(own_server: EmbeddedServer, tmp_path: Path) -> None:
    import threading

    from coordinator.study.study import Study, run
    from shared.store import connect
    from shared.training.jobs import toy_objective, toy_space
    from tests.helpers import start_worker, stop_all, wait_until

    store = connect(own_server.url, "restart", timeout_ms=500)
    study = Study(store, "k", toy_objective, toy_space(0.0), 2, algo="rand", seed=0)
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            run(study, grace=30, max_attempts=3, progress=False, interval=0.1)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    assert wait_until(lambda: store.counts("k")["new"] == 2, 30)
    server = _restart(own_server, down_s=1.5)  # longer than the 0.5 s selection timeout
    try:
        worker = start_worker(server.url, "restart", "--exp-key", "k", "--heartbeat", "0.5")
        thread.join(60)
        stop_all([worker])
        assert not thread.is_alive(), "the coordinator did not finish after the restart"
        assert not errors, repr(errors[0])
        assert store.counts("k")["done"] == 2
    finally:
        server.stop()
