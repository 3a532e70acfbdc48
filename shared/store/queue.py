"""The Strix side of the job protocol: reserve by resource class, heartbeat, finish, reap.

Every write that a worker makes on a job is guarded by ``owner`` and ``state``, so a
worker that lost its job to the reaper (it was presumed dead) can never overwrite the
result of the worker that took the job over.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable
from typing import Any

import pymongo

from shared.store.codec import encode
from shared.store.reads import State

log = logging.getLogger(__name__)


def utcnow() -> dt.datetime:
    """hyperopt's clock: naive UTC truncated to milliseconds, as stored by BSON."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def take(jobs: Any, owner: Any, query: dict, extra: dict | None = None) -> dict | None:
    """Atomically turn the oldest job matching ``query`` into RUNNING for ``owner``:
    the one reservation behind both hyperopt's ``reserve`` and Strix's."""
    now = utcnow()
    fields = {"owner": owner, "book_time": now, "refresh_time": now, "state": State.RUNNING}
    return jobs.find_one_and_update(
        query,
        {"$set": encode({**fields, **(extra or {})}), "$inc": {"version": 1}},
        sort=[("tid", pymongo.ASCENDING)],
        return_document=pymongo.ReturnDocument.AFTER,
    )


def _queue_query(exp_key: str | None, resources: Iterable[str]) -> dict:
    # a job posted by stock hyperopt has no resource class: it counts as light
    allowed = [*resources, *([None] if "light" in resources else [])]
    query: dict[str, Any] = {"state": State.NEW, "owner": None, "resource": {"$in": allowed}}
    if exp_key is not None:
        query["exp_key"] = exp_key
    return query


def peek_resource(jobs: Any, exp_key: str | None, resources: Iterable[str]) -> str | None:
    """The resource class of the oldest queued job this worker could take, if any."""
    doc = jobs.find_one(
        _queue_query(exp_key, list(resources)),
        projection={"resource": 1},
        sort=[("tid", pymongo.ASCENDING)],
    )
    return None if doc is None else (doc.get("resource") or "light")


def reserve(jobs: Any, owner: str, exp_key: str | None, resources: Iterable[str]) -> dict | None:
    """Like hyperopt's reserve, by resource class, and starting the heartbeat clock."""
    epoch = time.time()
    query = _queue_query(exp_key, list(resources))
    return take(jobs, owner, query, {"heartbeat": epoch, "started": epoch})


def _owned(job: dict, owner: str) -> dict:
    return {"_id": job["_id"], "owner": owner, "state": State.RUNNING}


def heartbeat(jobs: Any, job: dict, owner: str, extra: dict | None = None) -> bool:
    """Touch ``refresh_time``; False means the job is no longer ours (it was reaped)."""
    fields = {"refresh_time": utcnow(), "heartbeat": time.time(), **encode(extra or {})}
    return jobs.update_one(_owned(job, owner), {"$set": fields}).matched_count == 1


def set_fields(jobs: Any, job: dict, owner: str, fields: dict) -> bool:
    """Write worker fields (spec, gpu, progress) without bumping ``version``."""
    return jobs.update_one(_owned(job, owner), {"$set": encode(fields)}).matched_count == 1


def finish(jobs: Any, job: dict, owner: str, result: dict, error: str | None = None) -> bool:
    """Store the result and end the job: DONE, or ERROR with a reason."""
    fields: dict[str, Any] = {
        "result": encode(result),
        "state": State.ERROR if error else State.DONE,
        "refresh_time": utcnow(),
        "ended": time.time(),
    }
    if error:
        fields["error"] = ["strix", error]
    update = {"$set": fields, "$inc": {"version": 1}}
    return jobs.update_one(_owned(job, owner), update).matched_count == 1


def requeue(jobs: Any, job: dict, owner: str, reason: str) -> bool:
    """Give a job back to the queue untouched (a graceful stop, not a failure)."""
    update = {
        "$set": {
            "state": State.NEW,
            "owner": None,
            "book_time": None,
            "refresh_time": None,
            "heartbeat": None,
            "requeue_reason": reason,
        },
        "$inc": {"version": 1, "requeues": 1},
    }
    return jobs.update_one(_owned(job, owner), update).matched_count == 1


def reap(jobs: Any, grace_s: float, max_attempts: int, exp_key: str | None = None) -> list[int]:
    """Requeue RUNNING jobs whose heartbeat is older than ``grace_s``; returns their tids.

    Each update is conditioned on the ``heartbeat`` that was read, so when two reapers
    race over the same job exactly one of them wins, and ``attempts`` grows by one.
    The heartbeat is an epoch float, not ``refresh_time``: nx-27017 turns datetimes
    written by update operators into strings. Jobs run by stock hyperopt workers have
    no heartbeat and are never reaped (they send none while they run).
    """
    query: dict[str, Any] = {
        "state": State.RUNNING,
        "heartbeat": {"$lt": time.time() - grace_s},
    }
    if exp_key is not None:
        query["exp_key"] = exp_key
    reaped = []
    for doc in jobs.find(query, projection=["tid", "owner", "heartbeat", "attempts"]):
        attempts = int(doc.get("attempts") or 0) + 1
        lost = f"worker {doc.get('owner')} stopped sending heartbeats (attempt {attempts})"
        fields: dict[str, Any] = {
            "owner": None,
            "state": State.NEW,
            "book_time": None,
            "refresh_time": None,
            "heartbeat": None,
            "requeue_reason": lost,
        }
        if attempts >= max_attempts:
            gave_up = f"{lost}; gave up after {max_attempts} attempts"
            fields = {
                "state": State.ERROR,
                "refresh_time": utcnow(),
                "error": ["strix", gave_up],
            }
        guard = {k: doc.get(k) for k in ("_id", "owner", "heartbeat")}
        done = jobs.update_one(
            {**guard, "state": State.RUNNING},
            {"$set": fields, "$inc": {"version": 1, "attempts": 1}},
        )
        if done.matched_count:
            log.warning("reaped trial %s: %s", doc.get("tid"), fields.get("error") or lost)
            reaped.append(int(doc.get("tid", -1)))
    return reaped
