"""A heartbeat's verdict about one trial applies to that trial only.

The interleaving is forced with a delayed reply: the heartbeat about trial A is held at a
gate until A has finished and trial B runs; its late "not ours" must not stop B.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from shared.store import JOB_STATE_DONE, Store
from tests.helpers import post_toy, wait_until
from worker.config import build_parser, resolve
from worker.gpus import Inventory
from worker.runner import Worker


class GatedStore(Store):
    """A real store whose heartbeat about one tid waits at a gate before it is sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate_tid: int | None = None
        self.entered, self.gate = threading.Event(), threading.Event()

    def heartbeat(self, job: dict, *args: Any, **kwargs: Any) -> Any:
        if job.get("tid") == self.gate_tid:
            self.entered.set()
            assert self.gate.wait(60)
        return super().heartbeat(job, *args, **kwargs)


def _worker(mongo_url: str, db_name: str, store: Store) -> Worker:
    args = ["--mongo", mongo_url, "--db", db_name, "--exp-key", "race", "--heartbeat", "30"]
    return Worker(resolve(build_parser().parse_args(args)), store, Inventory(()))


def _run(worker: Worker) -> tuple[threading.Thread, dict]:
    active = worker._reserve()
    assert active is not None
    thread = threading.Thread(target=worker.run_job, args=(active,))
    thread.start()
    assert wait_until(lambda: worker.current is active, 30)
    return thread, active.job


def test_late_not_ours_about_a_finished_trial_does_not_stop_the_next(
    store: Store, mongo_url: str, db_name: str
) -> None:
    post_toy(store, "race", 2, sleep_s=1.5)
    gated = GatedStore(mongo_url, db_name)
    worker = _worker(mongo_url, db_name, gated)
    run_a, job_a = _run(worker)
    gated.gate_tid = job_a["tid"]
    beat = threading.Thread(target=worker.heartbeat.tick)
    beat.start()  # reads current = A, then waits at the gate: a delayed reply
    assert gated.entered.wait(30)
    run_a.join(60)  # A finishes while its heartbeat is in flight
    run_b, job_b = _run(worker)
    gated.gate.set()  # the heartbeat about A now returns "not ours" (A is DONE)
    beat.join(30)
    run_b.join(60)
    doc = store.jobs.find_one({"_id": job_b["_id"]})
    assert doc["state"] == JOB_STATE_DONE and doc["owner"] == worker.id, doc
    assert worker.jobs_run == 2
    gated.close()


def test_worker_ids_carry_a_uuid4(store: Store, mongo_url: str, db_name: str) -> None:
    """Compose workers share a host name and all run as pid 1: the uuid4 tells them apart."""
    ids = [_worker(mongo_url, db_name, store).id for _ in range(2)]
    _host, pid, tail = ids[0].split(":")
    assert uuid.UUID(tail).version == 4 and pid.isdigit() and ids[0] != ids[1]
