"""What a worker refuses and how a study resumes: real processes, real server."""

from __future__ import annotations

import pickle

import cloudpickle
import pytest

from coordinator.study.study import Study
from coordinator.study.study import run as run_study
from shared.domain import load_domain
from shared.errors import JobError
from shared.store import JOB_STATE_DONE, JOB_STATE_ERROR, Store
from shared.training.jobs import keras_space, toy_objective, toy_space
from tests.helpers import start_worker, stop_all, wait_until


def _toy(store: Store, key: str, n: int, space: dict | None = None) -> Study:
    return Study(
        store, key, toy_objective, space or toy_space(0.0), n, algo="rand", max_queue_len=n, seed=2
    )


def _not_installed(config: dict) -> dict:
    return {"status": "ok", "loss": 0.0}


def test_domain_pickles_reference_installed_code_only() -> None:
    from hyperopt import base

    domain = base.Domain(toy_objective, toy_space(0.0))
    assert load_domain(cloudpickle.dumps(domain)).fn is toy_objective
    foreign = base.Domain(_not_installed, toy_space(0.0))  # a test module, not `shared`
    with pytest.raises(JobError, match="only run functions of the installed `shared` package"):
        load_domain(cloudpickle.dumps(foreign))
    with pytest.raises(JobError, match="cannot be loaded"):
        load_domain(b"not a pickle")
    with pytest.raises(JobError):
        load_domain(pickle.dumps(print))


def test_study_resumes_with_the_same_exp_key(store, mongo_url, db_name) -> None:
    worker = start_worker(mongo_url, db_name, "--exp-key", "resume", "--poll-interval", "0.02")
    try:
        run_study(_toy(store, "resume", 3), grace=30, max_attempts=3, progress=False)
        run_study(_toy(store, "resume", 5), grace=30, max_attempts=3, progress=False)
    finally:
        stop_all([worker])
    docs = store.trials_in("resume")
    assert len(docs) == 5 and {d["tid"] for d in docs} == set(range(5))
    assert all(d["state"] == JOB_STATE_DONE for d in docs)


def test_wrong_version_job_is_refused_and_worker_carries_on(store, mongo_url, db_name) -> None:
    old = keras_space("toy", {"x": 1.0, "sleep": 0.0}, {}, {})
    old["strix_version"] = "0.0.1"
    worker = start_worker(mongo_url, db_name, "--poll-interval", "0.02")
    try:
        run_study(_toy(store, "old", 1, space=old), grace=30, max_attempts=3, progress=False)
        run_study(_toy(store, "new", 2), grace=30, max_attempts=3, progress=False)
    finally:
        stop_all([worker])
    (refused,) = store.trials_in("old")
    assert refused["state"] == JOB_STATE_ERROR
    assert "posted by Strix 0.0.1" in refused["error"][1]
    assert [d["state"] for d in store.trials_in("new")] == [JOB_STATE_DONE] * 2


@pytest.mark.slow
def test_isolated_worker_runs_each_trial_in_a_subprocess(store, mongo_url, db_name) -> None:
    worker = start_worker(mongo_url, db_name, "--isolate", "--poll-interval", "0.02")
    try:
        run_study(_toy(store, "iso", 2), grace=30, max_attempts=3, progress=False)
    finally:
        stop_all([worker])
    docs = store.trials_in("iso")
    assert [d["state"] for d in docs] == [JOB_STATE_DONE] * 2
    assert all(d["result"]["loss"] >= 0 for d in docs)


def test_worker_exits_after_reserve_timeout(mongo_url, db_name) -> None:
    worker = start_worker(mongo_url, db_name, "--reserve-timeout", "0.5", "--poll-cap", "0.1")
    assert wait_until(lambda: worker.poll() is not None, 30)
    assert worker.returncode == 0


def _params(store: Store, key: str) -> list[float]:
    docs = sorted(store.trials_in(key), key=lambda d: d["tid"])
    return [d["misc"]["vals"]["x"][0] for d in docs]


@pytest.mark.parametrize("algo", ["rand", "tpe", "optuna-tpe"])
def test_an_extended_seeded_study_continues_the_sequence(store, mongo_url, db_name, algo) -> None:
    """3 trials then 3 more draw what 6 trials at once draw: nothing is repeated."""

    def study(key: str, n: int) -> Study:
        return Study(store, key, toy_objective, toy_space(0.0), n, algo=algo, seed=7)

    worker = start_worker(mongo_url, db_name, "--poll-interval", "0.02")
    try:
        run_study(study("split", 3), grace=30, max_attempts=3, progress=False)
        run_study(study("split", 6), grace=30, max_attempts=3, progress=False)
        run_study(study("whole", 6), grace=30, max_attempts=3, progress=False)
    finally:
        stop_all([worker])
    split, whole = _params(store, "split"), _params(store, "whole")
    assert split == whole  # tpe too: 6 trials are all within its 20 random start-up ones
    assert len(set(split)) == 6, "no trial of a seeded study repeats another"
