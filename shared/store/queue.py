"""The Strix side of the job protocol: reserve by resource class, heartbeat, finish, reap.

**Owner-guarded writes.** Every write a trial makes goes through :func:`owned`: it matches
the job only while it is RUNNING under this ``owner`` *and* this ``attempt`` (a counter
that every reservation increments). A holder that lost its trial (reaped while it
stalled) can never write into the trial's next run, even when the same worker took the
job again; the write's verdict (``matched_count``) is about that one run.

**Leases.** A running job carries ``lease_expires``: server time (see
:mod:`shared.store.clock`) plus the *holder's own* grace, written at reservation and with
every beat. A reaper requeues a job only when ``lease_expires`` is older than the server's
time that it read for this check, so neither the reaper's clock nor its settings decide
another process's lease. Jobs of stock hyperopt workers have no lease and are never reaped.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

import pymongo

from shared.store.codec import encode
from shared.store.reads import State

log = logging.getLogger(__name__)
LEASE_FIELDS = ("owner", "attempt", "lease_expires")


def utcnow() -> dt.datetime:
    """hyperopt's clock: naive UTC truncated to milliseconds, as stored by BSON."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def take(jobs: Any, owner: Any, query: dict, extra: dict | None = None) -> dict | None:
    """Atomically turn the oldest job matching ``query`` into RUNNING for ``owner``:
    the one reservation behind both hyperopt's ``reserve`` and Strix's. It starts a new
    ``attempt``, which every later write of this run is guarded by."""
    now = utcnow()
    fields = {"owner": owner, "book_time": now, "refresh_time": now, "state": State.RUNNING}
    return jobs.find_one_and_update(
        query,
        {"$set": encode({**fields, **(extra or {})}), "$inc": {"version": 1, "attempt": 1}},
        sort=[("tid", pymongo.ASCENDING)],
        return_document=pymongo.ReturnDocument.AFTER,
    )


def owned(job: dict, owner: str) -> dict:
    """The guard of every trial write: this job, RUNNING, under ``owner``, in this attempt.

    ``job`` is the document :func:`reserve` returned (it carries ``_id`` and ``attempt``).
    Use it as the filter of an ``update_one``; ``matched_count == 0`` means the run is no
    longer ours, and that verdict concerns this run only.
    """
    return {
        "_id": job["_id"],
        "owner": owner,
        "attempt": job.get("attempt"),
        "state": State.RUNNING,
    }


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


def lease(now: float, grace: float) -> dict[str, float]:
    """The lease fields a holder writes: server time ``now`` plus its own ``grace``."""
    return {"heartbeat": now, "lease_expires": now + grace, "grace": grace}


def reserve(
    jobs: Any, owner: str, exp_key: str | None, resources: Iterable[str], now: float, grace: float
) -> dict | None:
    """Like hyperopt's reserve, by resource class, and starting the holder's lease."""
    query = _queue_query(exp_key, list(resources))
    return take(jobs, owner, query, {**lease(now, grace), "started": now})


def heartbeat(
    jobs: Any, job: dict, owner: str, now: float, grace: float, extra: dict | None = None
) -> bool:
    """Extend the lease by the holder's grace; False: this run is no longer ours."""
    fields = {"refresh_time": utcnow(), **lease(now, grace), **encode(extra or {})}
    return jobs.update_one(owned(job, owner), {"$set": fields}).matched_count == 1


def set_fields(jobs: Any, job: dict, owner: str, fields: dict) -> bool:
    """Write worker fields (spec, gpu, progress) without bumping ``version``."""
    return jobs.update_one(owned(job, owner), {"$set": encode(fields)}).matched_count == 1


def finish(
    jobs: Any, job: dict, owner: str, result: dict, error: str | None = None, now: float = 0.0
) -> bool:
    """Store the result and end the job: DONE, or ERROR with a reason.

    When nothing matched, the job is read back: a retry of a write whose first try landed
    (its reply was lost to a failover or a restart) finds the job already ended by this
    owner in this attempt, and that is a success, not a takeover.
    """
    state = State.ERROR if error else State.DONE
    fields: dict[str, Any] = {
        "result": encode(result),
        "state": state,
        "refresh_time": utcnow(),
        "ended": now,
    }
    if error:
        fields["error"] = ["strix", error]
    update = {"$set": fields, "$inc": {"version": 1}}
    if jobs.update_one(owned(job, owner), update).matched_count == 1:
        return True
    doc = jobs.find_one({"_id": job["_id"]}, projection=["owner", "attempt", "state"])
    mine = doc is not None and (doc.get("owner"), doc.get("attempt")) == (owner, job.get("attempt"))
    return mine and doc.get("state") == state


def requeue(jobs: Any, job: dict, owner: str, reason: str) -> bool:
    """Give a job back to the queue untouched (a graceful stop, not a failure)."""
    update = {
        "$set": {**_released(), "requeue_reason": reason},
        "$inc": {"version": 1, "requeues": 1},
    }
    return jobs.update_one(owned(job, owner), update).matched_count == 1


def _released() -> dict[str, Any]:
    return {
        "state": State.NEW,
        "owner": None,
        "book_time": None,
        "refresh_time": None,
        "heartbeat": None,
        "lease_expires": None,
    }


def reap(jobs: Any, now: float, max_attempts: int, exp_key: str | None = None) -> list[int]:
    """Requeue RUNNING jobs whose lease expired before ``now`` (server time); their tids.

    Each update is conditioned on the owner, attempt and expiry that were read, so a beat
    that lands meanwhile saves the job, and when two reapers race over the same job
    exactly one of them wins, and ``attempts`` grows by one.
    """
    query: dict[str, Any] = {"state": State.RUNNING, "lease_expires": {"$lt": now}}
    if exp_key is not None:
        query["exp_key"] = exp_key
    reaped = []
    for doc in jobs.find(query, projection=["tid", "attempts", *LEASE_FIELDS]):
        attempts = int(doc.get("attempts") or 0) + 1
        lost = f"worker {doc.get('owner')} stopped sending heartbeats (attempt {attempts})"
        fields: dict[str, Any] = {**_released(), "requeue_reason": lost}
        if attempts >= max_attempts:
            gave_up = f"{lost}; gave up after {max_attempts} attempts"
            fields = {"state": State.ERROR, "refresh_time": utcnow(), "error": ["strix", gave_up]}
        guard = {k: doc.get(k) for k in ("_id", *LEASE_FIELDS)}
        done = jobs.update_one(
            {**guard, "state": State.RUNNING},
            {"$set": fields, "$inc": {"version": 1, "attempts": 1}},
        )
        if done.matched_count:
            log.warning("reaped trial %s: %s", doc.get("tid"), fields.get("error") or lost)
            reaped.append(int(doc.get("tid", -1)))
    return reaped
