"""Owner-guarded writes at the store level: a holder that lost its trial (reaped while it
stalled) must not write into the trial's next run. The interleaving is forced: the stale
holder's write is issued after the reaper and the new owner have acted.
"""

from __future__ import annotations

import time

import pytest

from shared.errors import StoreError, StoreUnavailable
from shared.store import JOB_STATE_DONE, JOB_STATE_NEW, Store, connect
from tests.helpers import insert_toy_jobs
from tests.store.proxy import ReplyCutter
from worker import pruner


def _reaped(store: Store, job: dict) -> None:
    """What the reaper does to a job whose holder stopped beating (forced, not waited for)."""
    store.jobs.update_one(
        {"_id": job["_id"]},
        {"$set": {"state": JOB_STATE_NEW, "owner": None}, "$inc": {"version": 1, "attempts": 1}},
    )


def test_stale_checkpoint_is_refused_not_written_into_the_requeued_job(store: Store) -> None:
    insert_toy_jobs(store, "ck", 1)
    mj = store.handle
    job = mj.reserve("holder-a", exp_key="ck")
    mj.update(job, {"result": {"status": "new", "step": 1}})  # a checkpoint while it held it
    _reaped(store, job)  # the holder stalls; the reaper requeues its trial
    with pytest.raises(StoreError, match="changed under us"):
        mj.update(job, {"result": {"status": "new", "step": 2}})
    with pytest.raises(StoreError, match="changed under us"):
        mj.update(job, {"result": {"status": "new", "step": 3}})
    doc = store.jobs.find_one({"_id": job["_id"]})
    assert doc["state"] == JOB_STATE_NEW and doc["result"].get("step") == 1


def test_stale_rung_never_overwrites_the_new_runs_value(store: Store) -> None:
    insert_toy_jobs(store, "rg", 1)
    cfg = {"kind": "median", "min_epochs": 1, "startup": 1, "max_epochs": 10}
    first = store.reserve("w", "rg", ["light"], grace=0.01)
    time.sleep(0.05)
    assert store.reap(max_attempts=5)  # the same worker stalled past its grace, lost it...
    second = store.reserve("w", "rg", ["light"])  # ...and took it again (a new attempt)
    pruner.for_job(store, second, cfg, "w")(2, 0.5)  # the live run records epoch 2
    pruner.for_job(store, first, cfg, "w")(2, 9.9)  # the stale run wakes up and records
    (rec,) = store.rungs.find({"exp_key": "rg", "epoch": 2})
    assert rec["value"] == 0.5
    assert not store.record_rung(first, "w", 3, 9.9)  # nor a rung the live run has not reached
    assert store.rung_values("rg", 3) == []


def test_a_finish_whose_reply_was_lost_is_confirmed_by_reading_back(
    store: Store, mongo_url: str, db_name: str
) -> None:
    """The server applies the finish but the reply never comes (a failover, a restart): the
    retry finds the job already ended by this owner in this attempt, a success."""
    host, port = mongo_url.removeprefix("mongodb://").rstrip("/").rsplit(":", 1)
    proxy = ReplyCutter((host, int(port)))
    via = connect(f"mongodb://127.0.0.1:{proxy.port}", db_name, timeout_ms=2000)
    try:
        insert_toy_jobs(store, "lost", 1)
        job = via.reserve("w", "lost", ["light"])
        proxy.cut_next()
        with pytest.raises(StoreUnavailable):
            via.finish(job, "w", {"status": "ok", "loss": 0.25})
        assert store.jobs.find_one({"_id": job["_id"]})["state"] == JOB_STATE_DONE  # it landed
        assert via.finish(job, "w", {"status": "ok", "loss": 0.25}), "logged as lost"
        assert not via.finish(job, "intruder", {"status": "ok", "loss": 0.25})
    finally:
        via.close()
        proxy.close()


def test_the_uris_retry_writes_and_write_concern_are_honoured(mongo_url: str) -> None:
    plain = connect(mongo_url, check=False)
    chosen = connect(f"{mongo_url.rstrip('/')}/?retryWrites=false&w=1", check=False)
    try:
        assert plain.client.write_concern.document["w"] == "majority"
        assert plain.client.options.retry_writes is True
        assert chosen.client.write_concern.document == {"w": 1}
        assert chosen.client.options.retry_writes is False
    finally:
        plain.close()
        chosen.close()


def test_epoch_rows_are_written_only_while_the_run_is_ours(store: Store) -> None:
    insert_toy_jobs(store, "ep", 1)
    first = store.reserve("w", "ep", ["light"], grace=0.01)
    assert store.record_epoch(first, "w", 1, {"val_accuracy": 0.5})
    time.sleep(0.05)
    assert store.reap(max_attempts=5)  # stalled past its grace
    second = store.reserve("w", "ep", ["light"])
    assert not store.record_epoch(first, "w", 2, {"val_accuracy": 0.9})  # the stale run
    assert store.record_epoch(second, "w", 1, {"val_accuracy": 0.6})
    rows = store.history("ep", first["tid"])
    # the stale run's epoch 2 never landed; epoch 1, trained again, is the new run's row
    assert sorted((r["attempt"], r["epoch"]) for r in rows) == [(2, 1)]
    assert store.jobs.find_one({"_id": second["_id"]})["progress"]["val_accuracy"] == 0.6
