"""hyperopt's public MongoDB API, used as a hyperopt user would, on Strix's store.

Every test here talks only hyperopt's names (``MongoTrials``, ``MongoJobs``,
``MongoWorker``, ``fmin``, attachments, ``count_by_state_unsynced``...), imported from
``shared.store`` instead of ``hyperopt.mongoexp``. Workers are real processes: Strix's
worker started with hyperopt-mongo-worker's command line, or the MongoWorker classes.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import gridfs
import pytest
from hyperopt import STATUS_OK, fmin, hp, rand
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, JOB_STATE_NEW
from hyperopt.mongoexp import MongoWorker as HyperoptMongoWorker
from hyperopt.mongoexp import ReserveTimeout
from hyperopt.pyll import scope

from shared.store import MongoJobs, MongoTrials, MongoWorker
from tests.helpers import ROOT, stop_all
from tests.hyperopt_user.objective import SPACE, not_a_number, quadratic, with_attachment

ALLOW = ("--allow-module", "tests.hyperopt_user")


def hyperopt_url(mongo_url: str, db: str) -> str:
    """The same server as hyperopt spells it: ``mongo://[user:pw@]host:port/db/jobs``."""
    return f"mongo://{urlsplit(mongo_url).netloc}/{db}/jobs"


def hyperopt_worker_args(mongo_url: str, db: str, *more: str) -> list[str]:
    """hyperopt-mongo-worker's flags, with its ``host:port/db`` form of --mongo."""
    return [f"--mongo={urlsplit(mongo_url).netloc}/{db}", "--poll-interval=0.1", *more]


def run_script(url: str, exp_key: str, algo: str, n: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests.hyperopt_user.script", url, exp_key, algo, str(n)]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def strix_worker(mongo_url: str, db: str, tmp_path: Path, *more: str) -> subprocess.Popen:
    """``strix-worker`` started with hyperopt-mongo-worker's own command line."""
    args = hyperopt_worker_args(mongo_url, db, *more)
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        stdout=open(tmp_path / f"worker-{time.monotonic_ns()}.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    return proc


@pytest.mark.parametrize("algo", ["tpe", "rand"])
def test_a_hyperopt_script_runs_unchanged_but_the_import(
    mongo_url: str, db_name: str, tmp_path: Path, algo: str
) -> None:
    url = hyperopt_url(mongo_url, db_name)
    flags = ["--exp-key=exp1", "--max-consecutive-failures=4", "--reserve-timeout=60"]
    flags += ["--last-job-timeout=600", "--max-jobs=50", f"--workdir={tmp_path}"]
    worker = strix_worker(mongo_url, db_name, tmp_path, *flags, "--no-subprocesses", *ALLOW)
    try:
        script = run_script(url, "exp1", algo, 6)
        out, err = script.communicate(timeout=240)
    finally:
        stop_all([worker])
    assert script.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["n"] == 6 and all(math.isfinite(x) for x in report["losses"])
    trials = MongoTrials(url, exp_key="exp1")
    assert trials.count_by_state_unsynced(JOB_STATE_DONE) == 6
    assert {t["result"]["status"] for t in trials.trials} == {STATUS_OK}
    assert min(trials.losses()) == pytest.approx(quadratic(_point(trials, report["best"])))


def _point(trials: MongoTrials, best: dict) -> dict:
    """The evaluated parameters of the best trial (fmin returns choice indices)."""
    from hyperopt import space_eval

    return space_eval(SPACE, best)


def test_a_study_without_exp_key(mongo_url: str, db_name: str, tmp_path: Path) -> None:
    url = hyperopt_url(mongo_url, db_name)
    worker = strix_worker(mongo_url, db_name, tmp_path, *ALLOW)
    try:
        script = run_script(url, "-", "rand", 3)
        _, err = script.communicate(timeout=240)
    finally:
        stop_all([worker])
    assert script.returncode == 0, err[-3000:]
    trials = MongoTrials(url)
    assert len(trials.trials) == 3 and all(t["exp_key"] is None for t in trials.trials)
    assert "FMinIter_Domain" in trials.attachments


def test_nan_and_inf_losses_round_trip_as_floats(mongo_url: str, db_name: str) -> None:
    url = hyperopt_url(mongo_url, db_name)
    trials = MongoTrials(url, exp_key="nan")
    losses = [math.nan, math.inf, -math.inf, 0.5]
    tids = trials.new_trial_ids(len(losses))
    results = [{"status": STATUS_OK, "loss": x, "extra": [x, {"deep": x}]} for x in losses]
    miscs = [{"tid": t, "cmd": None, "idxs": {}, "vals": {}} for t in tids]
    trials.insert_trial_docs(trials.new_trial_docs(tids, [None] * 4, results, miscs))
    back = MongoTrials(url, exp_key="nan").losses()
    assert math.isnan(back[0]) and back[1:] == [math.inf, -math.inf, 0.5]
    deep = MongoTrials(url, exp_key="nan").trials[1]["result"]["extra"]
    assert deep == [math.inf, {"deep": math.inf}] and isinstance(deep[0], float)


@pytest.mark.usefixtures("in_tmp_dir")
def test_nan_results_from_a_worker_are_floats_too(mongo_url: str, db_name: str) -> None:
    url = hyperopt_url(mongo_url, db_name)
    post(MongoTrials(url, exp_key="nanrun"), not_a_number, 4)
    mj = MongoJobs.new_from_connection_str(url)
    allow = ["tests.hyperopt_user"]
    worker = MongoWorker(mj, 1.1, None, "nanrun", None, allow_modules=allow)
    for _ in range(4):
        worker.run_one(reserve_timeout=30)
    losses = MongoTrials(url, exp_key="nanrun").losses()
    assert len(losses) == 4 and all(math.isnan(x) or x == math.inf for x in losses)


def test_study_and_trial_attachments(mongo_url: str, db_name: str) -> None:
    url = hyperopt_url(mongo_url, db_name)
    a, b = MongoTrials(url, exp_key="a"), MongoTrials(url, exp_key="b")
    a.attachments["cfg"] = b"one"
    assert "cfg" in a.attachments and "cfg" not in b.attachments  # scoped by exp_key
    assert a.attachments["cfg"] == b"one"
    a.attachments["cfg"] = b"two"  # overwrite keeps one version
    assert MongoTrials(url, exp_key="a").attachments["cfg"] == b"two"
    b.attachments["cfg"] = b"bee"
    del a.attachments["cfg"]
    assert "cfg" not in a.attachments and b.attachments["cfg"] == b"bee"
    with pytest.raises(KeyError):
        a.attachments["cfg"]

    tids = a.new_trial_ids(1)
    misc = {"tid": tids[0], "cmd": None, "idxs": {}, "vals": {}}
    a.insert_trial_docs(a.new_trial_docs(tids, [None], [{"status": "new"}], [misc]))
    a.refresh()
    att = a.trial_attachments(a.trials[0])
    att["weights"] = b"w1"
    att["weights"] = b"w2"
    assert "weights" in att and att["weights"] == b"w2" and list(att) == ["weights"]
    del att["weights"]
    assert "weights" not in att
    att["weights"] = b"w3"
    a.attachments["keep"] = b"k"
    before = stored_files(a)
    a.delete_all()
    assert len(MongoTrials(url, exp_key="a").trials) == 0
    assert stored_files(a) == before - 2, "trial and study files both go"
    assert b.attachments["cfg"] == b"bee", "another study's attachments stay"


def stored_files(trials: MongoTrials) -> int:
    return len(list(gridfs.GridFS(trials.handle.db).find()))


def _allocate(url: str, n: int, out: mp.Queue, start: float) -> None:
    trials = MongoTrials(url, exp_key="ids", refresh=False)
    while time.time() < start:
        time.sleep(0.001)
    out.put([tid for _ in range(n) for tid in trials.new_trial_ids(1)])


def test_concurrent_posters_never_share_a_tid(mongo_url: str, db_name: str) -> None:
    url = hyperopt_url(mongo_url, db_name)
    MongoTrials(url, exp_key="ids", refresh=False)  # creates the indexes, as fmin does
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start = time.time() + 3
    procs = [ctx.Process(target=_allocate, args=(url, 50, out, start)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    tids = got[0] + got[1]
    assert len(tids) == 100 and len(set(tids)) == 100


def test_counts_refresh_and_a_finished_study_returns_at_once(
    mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    url = hyperopt_url(mongo_url, db_name)
    worker = strix_worker(mongo_url, db_name, tmp_path, "--exp-key=done", *ALLOW)
    try:
        trials = MongoTrials(url, exp_key="done")
        fmin(quadratic, SPACE, rand.suggest, 3, trials=trials, show_progressbar=False)
    finally:
        stop_all([worker])
    trials = MongoTrials(url, exp_key="done", refresh=False)
    trials.refresh()
    assert len(trials.trials) == 3
    assert trials.count_by_state_unsynced(JOB_STATE_DONE) == 3
    assert trials.count_by_state_unsynced([JOB_STATE_NEW, JOB_STATE_DONE]) == 3
    started = time.monotonic()
    fmin(quadratic, SPACE, rand.suggest, 3, trials=trials, show_progressbar=False)
    assert time.monotonic() - started < 5, "max_evals already reached: nothing to wait for"
    assert len(MongoTrials(url, exp_key="done").trials) == 3


def test_two_fmin_processes_on_one_study(mongo_url: str, db_name: str, tmp_path: Path) -> None:
    url = hyperopt_url(mongo_url, db_name)
    workers = [strix_worker(mongo_url, db_name, tmp_path, *ALLOW) for _ in range(2)]
    try:
        scripts = [run_script(url, "shared", "rand", 8) for _ in range(2)]
        outs = [s.communicate(timeout=300) for s in scripts]
    finally:
        stop_all(workers)
    assert all(s.returncode == 0 for s in scripts), [e[-2000:] for _, e in outs]
    tids = [t["tid"] for t in MongoTrials(url, exp_key="shared").trials]
    assert len(tids) == len(set(tids)) >= 8


def test_mongojobs_has_hyperopts_constructors(mongo_url: str, db_name: str) -> None:
    url = hyperopt_url(mongo_url, db_name)
    mj = MongoJobs.new_from_connection_str(url)
    assert mj.db.name == db_name and mj.jobs.name == "jobs" and len(mj) == 0
    again = MongoJobs(mj.db, mj.jobs, mj.gfs, mj.conn, None, "spec")  # hyperopt's positional form
    trials = MongoTrials(again, exp_key="ctor")
    assert trials.handle.db.name == db_name


@pytest.mark.usefixtures("in_tmp_dir")
def test_both_workers_run_jobs_posted_either_way(mongo_url: str, db_name: str) -> None:
    """A plain-hyperopt study (user objective) run by hyperopt's and Strix's MongoWorker;
    test_store and test_worker cover Strix-posted studies run by both."""
    url = hyperopt_url(mongo_url, db_name)
    trials = MongoTrials(url, exp_key="either")
    post(trials, with_attachment, 4)
    mj = MongoJobs.new_from_connection_str(url)
    stock = HyperoptMongoWorker(mj, poll_interval=1.1, exp_key="either", logfilename=None)
    ours = MongoWorker(mj, 1.1, None, "either", None, allow_modules=["tests.hyperopt_user"])
    for worker in (stock, ours, stock, ours):
        worker.run_one(host_id=type(worker).__module__, reserve_timeout=30)
    trials.refresh()
    assert len(trials.trials) == 4
    assert {t["owner"] for t in trials.trials} == {
        "hyperopt.mongoexp",
        "shared.store.hyperopt.mongoworker",
    }
    for trial in trials.trials:
        assert trial["state"] == JOB_STATE_DONE and trial["result"]["status"] == STATUS_OK
        assert trials.trial_attachments(trial)["note"].startswith(b"x=")


def post(trials: MongoTrials, fn: object, n: int) -> None:
    """What fmin does before it waits: pickle the Domain, suggest, insert."""
    import cloudpickle
    from hyperopt import base

    domain = base.Domain(fn, SPACE)
    trials.attachments["FMinIter_Domain"] = cloudpickle.dumps(domain)
    docs = rand.suggest(trials.new_trial_ids(n), domain, trials, 1)
    trials.insert_trial_docs(docs)


@pytest.mark.usefixtures("in_tmp_dir")
def test_strix_mongoworker_refuses_code_it_was_not_allowed(mongo_url: str, db_name: str) -> None:
    url = hyperopt_url(mongo_url, db_name)
    post(MongoTrials(url, exp_key="refuse"), quadratic, 1)
    mj = MongoJobs.new_from_connection_str(url)
    worker = MongoWorker(mj, poll_interval=1.1, exp_key="refuse", logfilename=None)
    worker.run_one(reserve_timeout=30)  # marks the job ERROR and returns: a loop goes on
    (doc,) = list(mj.jobs.find({"exp_key": "refuse"}))
    assert doc["state"] == JOB_STATE_ERROR
    assert "refusing to run code from tests.hyperopt_user" in doc["error"][1]


def test_a_crafted_domain_runs_no_code_on_a_real_worker(
    mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    """Whoever can write GridFS replaces the Domain with a dotted-name gadget that reaches
    ``exec`` through the allowed package; the worker marks the trial ERROR, runs nothing."""
    from tests.store.test_domain import call, crafted

    url = hyperopt_url(mongo_url, db_name)
    trials = MongoTrials(url, exp_key="gadget")
    post(trials, quadratic, 1)
    marker = tmp_path / "pwned"
    payload = f"open({str(marker)!r}, 'w').write('x')"
    gadget = crafted(
        "tests.hyperopt_user.objective", "quadratic.__builtins__.get", call("exec"), call(payload)
    )
    trials.attachments["FMinIter_Domain"] = gadget
    worker = strix_worker(mongo_url, db_name, tmp_path, "--exp-key=gadget", "--max-jobs=1", *ALLOW)
    try:
        assert worker.wait(timeout=120) == 0
    finally:
        stop_all([worker])
    assert not marker.exists(), "the worker ran code from the database"
    (doc,) = list(MongoJobs.new_from_connection_str(url).jobs.find({"exp_key": "gadget"}))
    assert doc["state"] == JOB_STATE_ERROR
    assert "refusing to run code from tests.hyperopt_user.objective.quadratic" in doc["error"][1]


class _WorkerThread(threading.Thread):
    """What hyperopt's own tests do: a thread that calls ``MongoWorker.run_one`` in a loop
    (an exception out of ``run_one`` ends the thread, as it ends hyperopt's)."""

    def __init__(self, url: str, exp_key: str | None) -> None:
        super().__init__(daemon=True)
        self.url, self.exp_key, self.stop = url, exp_key, threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        mj = MongoJobs.new_from_connection_str(self.url)
        allow = ["tests.hyperopt_user"]
        worker = MongoWorker(mj, 0.5, None, self.exp_key, None, allow_modules=allow)
        try:
            while not self.stop.is_set():
                try:
                    worker.run_one(reserve_timeout=1.0)
                except ReserveTimeout:
                    continue
        except BaseException as e:
            self.error = e


def _fmin_in_thread(space: dict, trials: MongoTrials, n: int) -> threading.Thread:
    def go() -> None:  # no argmin: a study of refused trials has none
        fmin(
            quadratic,
            space,
            rand.suggest,
            n,
            trials=trials,
            show_progressbar=False,
            return_argmin=False,
        )

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


@pytest.mark.usefixtures("in_tmp_dir")
def test_pure_math_nodes_run_and_a_refused_study_neither_hangs_fmin_nor_ends_the_worker(
    mongo_url: str, db_name: str
) -> None:
    url = hyperopt_url(mongo_url, db_name)
    worker = _WorkerThread(url, None)  # any study
    worker.start()
    try:
        evil = {**SPACE, "x": scope.call_method(hp.uniform("x", 0, 1), "__sub__", 1.0)}
        refused = _fmin_in_thread(evil, MongoTrials(url, exp_key="refused"), 2)
        refused.join(90)
        assert not refused.is_alive(), "fmin waits forever for trials that never run"
        assert worker.is_alive(), f"the worker thread died: {worker.error!r}"
        math_space = {**SPACE, "x": scope.tan(scope.sin(hp.uniform("x", -5, 5)))}
        ran = _fmin_in_thread(math_space, MongoTrials(url, exp_key="math"), 3)
        ran.join(90)
        assert not ran.is_alive() and worker.is_alive(), repr(worker.error)
    finally:
        worker.stop.set()
        worker.join(30)
    jobs = MongoJobs.new_from_connection_str(url).jobs
    assert [d["state"] for d in jobs.find({"exp_key": "math"})] == [JOB_STATE_DONE] * 3
    docs = list(jobs.find({"exp_key": "refused"}))
    assert [d["state"] for d in docs] == [JOB_STATE_ERROR] * 2
    for d in docs:
        assert "refusing a search space with a 'call_method' node" in d["error"][1]


def test_a_job_cannot_choose_where_the_minimal_worker_works(
    mongo_url: str, db_name: str, in_tmp_dir: Path
) -> None:
    """hyperopt's worker runs a trial in ``misc.workdir``, a path the database chooses; Strix's
    takes it only inside its own working directory."""
    url = hyperopt_url(mongo_url, db_name)
    post(MongoTrials(url, exp_key="where"), quadratic, 2)
    mj = MongoJobs.new_from_connection_str(url)
    outside, inside = in_tmp_dir.parent / f"evil-{db_name}", in_tmp_dir / "runs"
    for doc, workdir in zip(mj.jobs.find({"exp_key": "where"}), (outside, inside), strict=True):
        mj.jobs.update_one({"_id": doc["_id"]}, {"$set": {"misc.workdir": str(workdir)}})
    worker = MongoWorker(mj, 1.1, None, "where", None, allow_modules=["tests.hyperopt_user"])
    worker.run_one(reserve_timeout=30)
    worker.run_one(reserve_timeout=30)
    assert not outside.exists() and inside.is_dir()
    states = {d["misc"]["workdir"]: d for d in mj.jobs.find({"exp_key": "where"})}
    assert states[str(inside)]["state"] == JOB_STATE_DONE
    refused = states[str(outside)]
    assert refused["state"] == JOB_STATE_ERROR
    assert refused["error"][1] == (
        f"refusing the trial's workdir {outside}: this worker runs trials only under its "
        f"current directory {in_tmp_dir.resolve()}; start it where that directory is, or pass "
        "workdir="
    )
