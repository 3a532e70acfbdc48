"""Preemption with real workers: a trial interrupted in its third epoch (SIGTERM, and
separately kill -9) resumes on ANOTHER worker process and ends with the epoch history
and result of an uninterrupted run with the same seed; no metric row is written twice,
a preemption does not count as an attempt (a crash does), and the checkpoints are
deleted once the trial is done.

Real TensorFlow on a couple of thousand 28 px Fashion-MNIST images, 4 epochs: an epoch
lasts seconds, so a signal sent once the worker has reported two epochs lands in the third,
and the worker has saved a checkpoint by then (its first save, after epoch 1, is never
deferred: checkpoints defer a save only to stay within 5 % of the training time). The
SIGTERM-ed worker saves inside epoch 3, so that run also resumes in the middle of an epoch.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.store import State, Store
from tests.helpers import job_of, start_worker, stop_all, wait_until

PARAMS: dict[str, Any] = {
    "batch_size": 32,
    "learning_rate": 1e-3,
    "optimizer": "adam",
    "fcl_num_layers": 1,
    "fcl_layer_size": 64,
    "fcl_dropout_rate": 0.2,
    "activation": "relu",
}
DATA = {"image_size": 28, "validation_fraction": 0.2, "limit": 2400, "test_limit": 50}
BUDGET = {"max_epochs": 4, "patience": 3}


def _post(store: Store, exp_key: str) -> None:
    """One seeded baseline trial, posted as ``fmin`` posts it (Domain attached)."""
    import cloudpickle
    from hyperopt import base, hp, rand

    from shared.training.jobs import keras_space, objective

    params = {**PARAMS, "activation": hp.choice("activation", ["relu"])}
    space = keras_space("baseline", params, DATA, BUDGET, seed=7)
    trials = store.trials(exp_key, refresh=False)
    domain = base.Domain(objective, space)
    trials.attachments["FMinIter_Domain"] = cloudpickle.dumps(domain)
    trials.insert_trial_docs(rand.suggest(trials.new_trial_ids(1), domain, trials, 1))


def _worker(
    url: str, db: str, cache: Path, data_dir: Path, log: Path, *extra: str
) -> subprocess.Popen:
    # a grace long enough that a loaded machine's slow TensorFlow import never loses a lease
    args = ("--heartbeat", "1", "--grace", "10", "--max-jobs", "1", "--poll-interval", "0.05")
    args += extra
    args += ("--cache-dir", str(cache), "--data-dir", str(data_dir))
    return start_worker(url, db, *args, log=log)


def _position(store: Store, exp_key: str) -> tuple[int, int]:
    """(epoch, batch) of the trial's current checkpoint."""
    pointer = job_of(store, exp_key).get("checkpoint") or {}
    return int(pointer.get("epoch") or 0), int(pointer.get("batch") or 0)


def _in_epoch_3(store: Store, exp_key: str) -> bool:
    """Two epochs reported (the third one runs) and a checkpoint to resume from."""
    doc = job_of(store, exp_key)
    reported = int((doc.get("progress") or {}).get("epoch") or 0)
    return doc["state"] == State.RUNNING and reported >= 2 and _position(store, exp_key) >= (1, 0)


@pytest.fixture(scope="module")
def reference(mongo_server: str, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The uninterrupted run (module-wide: both kinds of kill compare with it)."""
    from shared.store import connect

    tmp = tmp_path_factory.mktemp("reference")
    store = connect(mongo_server, "strix_preempt_reference")
    store.client.drop_database("strix_preempt_reference")
    store.create_indexes()
    _post(store, "whole")
    worker = _worker(mongo_server, store.target.db, tmp / "cache", data_dir, tmp / "w.log")
    try:
        assert worker.wait(600) == 0, (tmp / "w.log").read_text()[-3000:]
    finally:
        stop_all([worker])
    doc = job_of(store, "whole")
    assert doc["state"] == State.DONE, doc
    yield doc["result"]
    store.client.drop_database("strix_preempt_reference")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_an_interrupted_trial_resumes_on_another_worker_with_the_same_history(
    store: Store, mongo_url: str, db_name: str, data_dir: Path, tmp_path: Path, reference, sig
) -> None:
    _post(store, "cut")
    cache = tmp_path / "cache"
    first = _worker(mongo_url, db_name, cache, data_dir, tmp_path / "a.log")
    second = None
    try:
        inside = wait_until(lambda: _in_epoch_3(store, "cut"), 600, interval=0.05)
        assert inside, (tmp_path / "a.log").read_text()[-3000:]
        seen = _position(store, "cut")
        os.kill(first.pid, sig)  # in epoch 3, with a checkpoint saved
        first.wait(120)
        if sig == signal.SIGTERM:
            assert first.returncode == 0, (tmp_path / "a.log").read_text()[-3000:]
            doc = job_of(store, "cut")
            assert doc["state"] == State.NEW and doc["requeues"] >= 1
            assert _position(store, "cut") >= seen, "saved at the signal, not before"
        second = _worker(mongo_url, db_name, cache, data_dir, tmp_path / "b.log")
        assert second.wait(600) == 0, (tmp_path / "b.log").read_text()[-3000:]
    finally:
        stop_all([p for p in (first, second) if p is not None])
    doc = job_of(store, "cut")
    result = doc["result"]
    assert doc["state"] == State.DONE and doc["worker"]["pid"] == second.pid
    assert result["resumes"] == 1
    assert int(doc.get("attempts") or 0) == (0 if sig == signal.SIGTERM else 1)
    for key in ("status", "epochs", "best_epoch", "stopped_early"):
        assert result[key] == reference[key], key
    assert result["loss"] == pytest.approx(reference["loss"], abs=1e-5)
    assert result["history"].keys() == reference["history"].keys()
    for key, values in reference["history"].items():
        np.testing.assert_allclose(result["history"][key], values, rtol=1e-4, atol=1e-5)
    rows = store.history("cut", doc["tid"])
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4], "one metric row per epoch"
    assert doc.get("checkpoint") is None
    assert list(store.db["checkpoints.files"].find({})) == []
