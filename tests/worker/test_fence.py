"""A holder fences itself: when a store outage outlasts its lease, it stops its trial by
the time the lease may run out at the server, so it never runs on while a reaper may give
the trial to another worker. Real worker process, a real server stopped and restarted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shared.store import State, connect
from shared.store.embedded import start_embedded
from tests.helpers import post_toy, start_worker, stop_all, wait_until

pytestmark = pytest.mark.slow


def test_a_lease_that_runs_out_in_an_outage_stops_the_trial(tmp_path: Path) -> None:
    server = start_embedded(tmp_path / "nx")
    store = connect(server.url, "fence")
    log = tmp_path / "worker.log"
    args = ("--heartbeat", "0.5", "--grace", "2", "--poll-interval", "0.05", "--max-jobs", "1")
    post_toy(store, "f", 1, sleep_s=30.0)
    worker = start_worker(server.url, "fence", *args, log=log)
    try:
        running = {"state": State.RUNNING}
        assert wait_until(lambda: store.jobs.find_one(running), 60), log.read_text()
        server.stop()
        down = time.monotonic()
        assert wait_until(lambda: "lease ran out unrenewed" in log.read_text(), 15), log.read_text()
        assert time.monotonic() - down <= 2.0 + 2.0, "the trial ran on past its lease"
        server = start_embedded(server.data_dir, server.host, server.port)
        assert worker.wait(120) == 0, log.read_text()  # it reran the trial, once, and exited
        doc = store.jobs.find_one({"tid": 0})
        assert doc["state"] == State.DONE and doc["result"]["status"] == "ok", doc
    finally:
        stop_all([worker])
        store.close()
        server.stop()
