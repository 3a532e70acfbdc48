"""The store side of multi-fidelity: rung records, pruned trials, and the reads and
writes the study budgets (``--stop-after``, ``--timeout``) need.

A rung record is one document per trial and judged epoch,
``{exp_key, epoch, tid, value, owner, time}``, unique on ``(exp_key, epoch, tid)``. A
worker reads every record of an epoch with one query on that index, then writes its own
with one single-document upsert. MongoDB writes a document atomically, so a concurrent
reader sees a record whole or not at all: no trial ever sees a half-written rung. A
re-run of the same trial (after its worker died) replaces its own record.

A record is owner-guarded like every trial write: it is written only while the job is
still this run's (:func:`shared.store.queue.owned`), and only over a record of the same or
an earlier ``attempt``, so a reaped holder that wakes up never overwrites the value of the
trial's live run, which other trials are judged against.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pymongo
import pymongo.errors

from shared.store.codec import encode
from shared.store.queue import owned
from shared.store.reads import State

RUNG_INDEX = [("exp_key", pymongo.ASCENDING), ("epoch", pymongo.ASCENDING), ("tid", 1)]


def create_indexes(rungs: Any) -> None:
    rungs.create_index(RUNG_INDEX, unique=True)


def values(rungs: Any, exp_key: str, epoch: int, but: int | None = None) -> list[float]:
    """The values other trials recorded at ``epoch``, in no particular order (the rules
    are order-free): one query on the ``(exp_key, epoch, tid)`` index.

    ``but`` is the asking trial's tid; its own earlier record (a previous run) is skipped.
    """
    query = {"exp_key": exp_key, "epoch": int(epoch)}
    docs = rungs.find(query, projection={"_id": 0, "tid": 1, "value": 1})
    return [
        float(d["value"])
        for d in docs
        if d.get("tid") != but and isinstance(d.get("value"), int | float)
    ]


def record(rungs: Any, jobs: Any, job: dict, owner: str, epoch: int, value: float) -> bool:
    """Write (or, for a re-run of the trial, replace) one trial's value at ``epoch``;
    False when the run is no longer ours (nothing is written then)."""
    if not jobs.update_one(owned(job, owner), {"$set": {"rung": int(epoch)}}).matched_count:
        return False
    attempt = int(job.get("attempt") or 0)
    key = {"exp_key": job.get("exp_key"), "epoch": int(epoch), "tid": int(job.get("tid", -1))}
    doc = {**key, "value": float(value), "owner": owner, "attempt": attempt, "time": time.time()}
    try:  # a record of a later attempt does not match, and the upsert then hits the key
        rungs.replace_one({**key, "attempt": {"$lte": attempt}}, encode(doc), upsert=True)
    except pymongo.errors.DuplicateKeyError:
        return False
    return True


def pruned_query(exp_key: str | None) -> dict[str, Any]:
    query: dict[str, Any] = {"state": int(State.DONE), "result.pruned": True}
    if exp_key is not None:
        query["exp_key"] = exp_key
    return query


def count_pruned(jobs: Any, exp_key: str | None) -> int:
    """Finished trials that a pruner stopped (a subset of the ``ok`` ones)."""
    return len(list(jobs.find(pruned_query(exp_key), projection=["_id"])))


def _dotted(doc: dict, path: str) -> Any:
    """A dotted field of a projected document: nx-27017 returns it flat, MongoDB nested."""
    if path in doc:
        return doc[path]
    head, _, rest = path.partition(".")
    inner = doc.get(head)
    return _dotted(inner, rest) if isinstance(inner, dict) and rest else None


def finished_losses(jobs: Any, exp_key: str) -> list[float | None]:
    """The loss of every finished trial in the order they finished (None: failed, or not
    a number), as ``--stop-after`` counts them."""
    docs = jobs.find(
        {"exp_key": exp_key, "state": int(State.DONE)},
        projection=["result.loss", "result.status", "ended", "tid"],
        sort=[("ended", pymongo.ASCENDING), ("tid", pymongo.ASCENDING)],
    )
    out: list[float | None] = []
    for d in docs:
        loss = _dotted(d, "result.loss")
        ok = _dotted(d, "result.status") == "ok" and isinstance(loss, int | float)
        out.append(float(loss) if ok and math.isfinite(loss) else None)
    return out


def withdraw_queued(jobs: Any, exp_key: str) -> int:
    """Delete the study's queued trials that no worker ever started: a study that stops
    posting must not leave suggestions behind for workers to run. A trial that was
    started and went back to the queue (its worker stopped or died) stays, to finish.
    Reservation is atomic, so a trial is either taken (kept) or deleted, never both."""
    query = {"exp_key": exp_key, "state": int(State.NEW), "owner": None, "started": None}
    return int(jobs.delete_many(query).deleted_count)
