"""Trial checkpoints in the store (GridFS and a directory), against a real server:
only the owner's write becomes current, a reader never sees a replaced one, clean-up
removes every version, and only the best ``--keep-best`` trials keep their final model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import StoreError
from shared.store import checkpoints
from tests.helpers import insert_toy_jobs


def _files(store, job) -> int:
    return len(list(store.db["checkpoints.files"].find({"filename": checkpoints.trial_file(job)})))


@pytest.mark.parametrize("where", ["gridfs", "dir"])
def test_only_the_owner_s_checkpoint_becomes_current(store, tmp_path: Path, where: str) -> None:
    root = None if where == "gridfs" else str(tmp_path)
    insert_toy_jobs(store, "c1", 1)
    job = store.reserve("w1", "c1", ["light"])
    assert store.save_checkpoint(job, "w1", b"first", {"epoch": 1, "batch": 0}, root)
    assert store.save_checkpoint(job, "w1", b"second", {"epoch": 2, "batch": 0}, root)
    assert not store.save_checkpoint(job, "zombie", b"stale", {"epoch": 9, "batch": 0}, root)
    fresh = store.jobs.find_one({"_id": job["_id"]})
    assert fresh["checkpoint"]["epoch"] == 2
    assert store.load_checkpoint(fresh, root) == b"second"
    if root is None:
        assert _files(store, job) == 1  # the replaced and the rejected ones are gone
    else:
        assert len(list(tmp_path.rglob("*.npz"))) == 1


def test_a_requeued_trial_is_resumed_by_whoever_reserves_it(store) -> None:
    insert_toy_jobs(store, "c2", 1)
    job = store.reserve("w1", "c2", ["light"])
    store.save_checkpoint(job, "w1", b"state", {"epoch": 3, "batch": 0})
    assert store.requeue(job, "w1", "preempted")
    again = store.reserve("w2", "c2", ["light"])
    assert store.load_checkpoint(again) == b"state"
    assert not store.save_checkpoint(job, "w1", b"late", {"epoch": 4, "batch": 0})
    assert store.load_checkpoint(store.jobs.find_one({"_id": job["_id"]})) == b"state"


def test_a_job_cannot_point_a_worker_at_a_path(store, tmp_path: Path) -> None:
    job = {"_id": 1, "exp_key": "x", "tid": 1, "checkpoint": {"name": "../../etc/passwd"}}
    assert store.load_checkpoint(job, str(tmp_path)) is None
    with pytest.raises(ValueError, match="refusing checkpoint name"):
        checkpoints.dir_path(str(tmp_path), job, "../x.npz")


def test_clear_removes_every_version_once_finished(store) -> None:
    insert_toy_jobs(store, "c3", 1)
    job = store.reserve("w1", "c3", ["light"])
    store.save_checkpoint(job, "w1", b"a", {"epoch": 1, "batch": 0})
    from gridfs import GridFS  # a zombie's orphan under the same trial name

    GridFS(store.db, collection="checkpoints").put(b"orphan", filename=checkpoints.trial_file(job))
    assert not store.clear_checkpoint(job, "w1")  # still running: not cleared
    assert store.finish(job, "w1", {"status": "ok", "loss": 0.5})
    assert not store.clear_checkpoint(job, "other")
    assert store.clear_checkpoint(job, "w1")
    assert _files(store, job) == 0


def test_only_the_best_trials_keep_their_final_model(store) -> None:
    insert_toy_jobs(store, "c4", 4)
    losses = [0.5, 0.2, 0.9, 0.1]
    for loss in losses:
        job = store.reserve("w", "c4", ["light"])
        store.keep_model(job, "w", f"model-{loss}".encode(), loss, 2)
        store.finish(job, "w", {"status": "ok", "loss": loss})
    kept = {d["tid"] for d in store.jobs.find({"exp_key": "c4"}) if d.get("kept_model")}
    tids = sorted(d["tid"] for d in store.jobs.find({"exp_key": "c4"}))
    assert kept == {tids[1], tids[3]}
    assert store.kept_model("c4", tids[3]) == b"model-0.1"
    with pytest.raises(StoreError):
        store.kept_model("c4", tids[0])
