"""The store suite: hyperopt's job protocol on pymongo 4, against a real server.

Runs against the embedded nx-27017, or a real mongod when MONGO_URL is set.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import threading
import time

import pytest
from hyperopt import fmin, tpe
from hyperopt.mongoexp import MongoWorker

from shared.errors import ConfigError, StoreUnavailable
from shared.store import JOB_STATE_DONE, JOB_STATE_ERROR, JOB_STATE_NEW, connect, parse_target
from shared.store.client import redact
from shared.training.jobs import toy_objective, toy_space
from tests.helpers import insert_toy_jobs, wait_until


def test_uri_forms_and_redaction() -> None:
    t = parse_target("mongodb://u:examplepw@h:1/dbx?authSource=admin")
    assert t.db == "dbx" and "examplepw" not in repr(t) and "examplepw" not in t.redacted
    h = parse_target("mongo://u:examplepw9@h:2/studies/jobs")
    assert (h.db, h.collection) == ("studies", "jobs") and "examplepw9" not in repr(h)
    assert parse_target("mongodb+srv://u:example-zz@c.example.com/?tls=true").db == "strix"
    assert redact("x mongodb://a:examplepw@h y") == "x mongodb://a:***@h y"
    with pytest.raises(ConfigError, match="malformed MongoDB URI"):
        parse_target("localhost:27017")


# Every secret-bearing part of a URI that pymongo documents (its URI options spec's
# sensitive options, and every authMechanismProperties key it does not list as safe to show).
SECRET_URIS = {
    "userinfo": "mongodb://alice:example-Sx1@h:27017/",
    "userinfo, escaped": "mongodb://alice:p%40example-Sx2%2Fw@h/?authSource=admin",
    "userinfo, unescaped / and @": "mongodb://alice:p/S@x3-example@h/",
    "srv userinfo": "mongodb+srv://alice:example-Sx4@c.example.com/?tls=true",
    "hyperopt form": "mongo://alice:example-Sx5@h:27017/db/jobs",
    "tlsCertificateKeyFilePassword": "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=example-Sx6",
    "any case": "mongodb://h/?TLSCERTIFICATEKEYFILEPASSWORD=example-Sx7&w=1",
    "proxyPassword": "mongodb://h/?proxyHost=p&proxyUsername=example-Sx8&proxyPassword=example-Sx9",
    "AWS_SESSION_TOKEN": "mongodb://AKIA:example-Sx10@h/?authMechanism=MONGODB-AWS"
    "&authMechanismProperties=AWS_SESSION_TOKEN:example-Sx11",
    "AWS_SESSION_TOKEN, escaped": "mongodb://h/?authMechanismProperties=SERVICE_NAME%3Amongodb"
    "%2CAWS_SESSION_TOKEN%3ASx12&appname=a",
    "an unknown property": "mongodb://h/?authMechanismProperties=SERVICE_NAME:m,CUSTOM:example-Sx13",
    "in a sentence": "no mongodb://u:example-Sx14@h/?proxyPassword=example-Sx15; is it up?",
}


@pytest.mark.parametrize("case", sorted(SECRET_URIS))
def test_redact_hides_every_secret_pymongo_documents(case: str) -> None:
    import re

    uri = SECRET_URIS[case]
    shown = redact(uri)
    assert not re.search(r"Sx\d+", shown), shown
    assert "mongo" in shown and "***" in shown, shown
    if "SERVICE_NAME" in uri:
        assert "SERVICE_NAME" in shown and "m" in shown, "what is safe to show stays"


def test_unreachable_server_is_one_clear_line() -> None:
    with pytest.raises(StoreUnavailable) as err:
        connect("mongodb://u:examplepw@127.0.0.1:1/", timeout_ms=300)
    msg = str(err.value)
    assert "examplepw" not in msg and "\n" not in msg and "cannot reach MongoDB" in msg


def test_reserve_takes_oldest_once(store) -> None:
    tids = insert_toy_jobs(store, "e1", 3)
    first = store.reserve("w1", "e1", ["light"])
    second = store.reserve("w2", "e1", ["light"])
    assert [first["tid"], second["tid"]] == tids[:2]
    assert store.reserve("w3", "other", ["light"]) is None
    assert store.counts("e1") == {"new": 1, "running": 2, "done": 0, "error": 0}


def test_resource_classes_are_respected(store) -> None:
    insert_toy_jobs(store, "e2", 1, resource="heavy")
    insert_toy_jobs(store, "e2", 1, resource="light")
    assert store.peek_resource("e2", ["light", "heavy"]) == "heavy"
    job = store.reserve("w", "e2", ["light"])
    assert job["resource"] == "light"
    assert store.reserve("w", "e2", ["light"]) is None


def test_writes_are_guarded_by_owner(store) -> None:
    insert_toy_jobs(store, "e3", 1)
    job = store.reserve("w1", "e3", ["light"])
    assert not store.finish(job, "intruder", {"status": "ok", "loss": 0.1})
    assert store.heartbeat(job, "w1")
    assert store.finish(job, "w1", {"status": "ok", "loss": float("nan")})
    done = store.trials_in("e3")[0]
    assert done["state"] == JOB_STATE_DONE and math.isnan(done["result"]["loss"])  # NaN round-trips
    assert done["version"] > job["version"] - 1


def test_requeue_returns_job_to_new(store) -> None:
    insert_toy_jobs(store, "e4", 1)
    job = store.reserve("w1", "e4", ["light"])
    assert store.requeue(job, "w1", "signal")
    doc = store.trials_in("e4")[0]
    assert doc["state"] == JOB_STATE_NEW and doc["owner"] is None and doc["requeues"] == 1


def test_reaper_requeues_then_gives_up(store) -> None:
    insert_toy_jobs(store, "e5", 1)
    for attempt in (1, 2):
        assert store.reserve(f"dead{attempt}", "e5", ["light"], grace=0.01) is not None
        time.sleep(0.05)
        assert store.reap(max_attempts=3) != []
        doc = store.trials_in("e5")[0]
        assert (doc["state"], doc["attempts"]) == (JOB_STATE_NEW, attempt)
    store.reserve("dead3", "e5", ["light"], grace=0.01)
    time.sleep(0.05)
    store.reap(max_attempts=3)
    doc = store.trials_in("e5")[0]
    assert doc["state"] == JOB_STATE_ERROR and "gave up after 3" in doc["error"][1]


def test_racing_reapers_count_one_attempt(store) -> None:
    insert_toy_jobs(store, "e6", 4)
    for i in range(4):
        store.reserve(f"dead{i}", "e6", ["light"], grace=0.01)
    time.sleep(0.05)
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda: results.append(store.reap(5))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reaped = sorted(tid for r in results for tid in r)
    assert len(reaped) == 4 and len(set(reaped)) == 4
    assert all(d["attempts"] == 1 for d in store.trials_in("e6"))


def test_trial_ids_are_unique_under_concurrency(store) -> None:
    trials = store.trials("e7", refresh=False)
    got: list[int] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(10):
            ids = trials.new_trial_ids(3)
            with lock:
                got.extend(ids)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 120 and len(set(got)) == 120


def test_attachments_are_scoped_by_exp_key(store) -> None:
    a, b = store.trials("ka", refresh=False), store.trials("kb", refresh=False)
    a.attachments["blob"] = b"one"
    a.attachments["blob"] = b"two"  # overwrite keeps one version
    assert a.attachments["blob"] == b"two" and "blob" in a.attachments
    assert "blob" not in b.attachments
    with pytest.raises(KeyError):
        b.attachments["blob"]
    assert list(a.attachments) == ["blob"]


def _reserve_all(url: str, db: str, name: str, out: mp.Queue) -> None:
    s = connect(url, db)
    got = []
    while (job := s.reserve(name, "race", ["light"])) is not None:
        got.append(job["tid"])
    out.put(got)


def test_two_processes_never_reserve_the_same_job(store, mongo_url: str, db_name: str) -> None:
    tids = insert_toy_jobs(store, "race", 40)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_reserve_all, args=(mongo_url, db_name, f"p{i}", out)) for i in range(2)
    ]
    for p in procs:
        p.start()
    got = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sorted(got[0] + got[1]) == sorted(tids)
    assert not set(got[0]) & set(got[1])


@pytest.mark.usefixtures("in_tmp_dir")
def test_stock_hyperopt_worker_runs_strix_jobs(store) -> None:
    """hyperopt's own MongoWorker runs what fmin posted through Strix's store."""
    trials = store.trials("stock")
    poster = threading.Thread(
        target=fmin,
        daemon=True,
        kwargs=dict(
            fn=toy_objective,
            space=toy_space(0.0),
            algo=tpe.suggest,
            max_evals=3,
            trials=trials,
            max_queue_len=3,
            show_progressbar=False,
        ),
    )
    poster.start()
    assert wait_until(lambda: store.counts("stock")["new"] == 3, 20)
    worker = MongoWorker(store.handle, poll_interval=1.1, exp_key="stock", logfilename=None)
    for _ in range(3):
        worker.run_one(host_id="stock-worker", reserve_timeout=20)
    poster.join(30)
    docs = store.trials_in("stock")
    assert [d["state"] for d in docs] == [JOB_STATE_DONE] * 3
    assert all(d["result"]["status"] == "ok" and d["result"]["loss"] >= 0 for d in docs)
