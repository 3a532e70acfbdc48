"""The typed read side of a study, as Optuna's storages offer it: named states,
server-side counts, the best trials, the trials in given states, one trial's epochs.

The coordinator, the benchmarks and the dashboard read through these functions, never
through raw queries, so a schema detail (how hyperopt numbers its states, how nx-27017
handles dotted projections) is known here only.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import pymongo


class State(enum.IntEnum):
    """hyperopt's job states (``hyperopt.base.JOB_STATE_*``), by name: the one place
    their numbers are written down."""

    NEW = 0
    RUNNING = 1
    DONE = 2
    ERROR = 3


# hyperopt's module-level spellings (``from hyperopt.mongoexp import JOB_STATE_DONE``),
# bound to the enum's members so a migrated script reads the same numbers
JOB_STATE_NEW, JOB_STATE_RUNNING, JOB_STATE_DONE, JOB_STATE_ERROR = State
STATES = {s: s.name.lower() for s in State}

OUTCOMES = ("queued", "running", "ok", "failed", "error")


def _study(exp_key: str | None, **more: Any) -> dict[str, Any]:
    query = dict(more)
    if exp_key is not None:
        query["exp_key"] = exp_key
    return query


def _group(jobs: Any, match: dict, key: str) -> dict[Any, int]:
    rows = jobs.aggregate([{"$match": match}, {"$group": {"_id": f"${key}", "n": {"$sum": 1}}}])
    return {row["_id"]: int(row["n"]) for row in rows}


def counts(jobs: Any, exp_key: str | None = None) -> dict[State, int]:
    """Jobs per state, counted by the server."""
    found = _group(jobs, _study(exp_key), "state")
    return {s: found.get(int(s), 0) for s in State}


def tally(jobs: Any, exp_key: str | None = None) -> dict[str, int]:
    """Trials by outcome: queued, running, ok, failed (a result with status fail) and
    error (the job could not run, or was lost too often). Counted by the server."""
    by_state = counts(jobs, exp_key)
    ok = _group(jobs, _study(exp_key, state=int(State.DONE)), "result.status").get("ok", 0)
    return {
        "queued": by_state[State.NEW],
        "running": by_state[State.RUNNING],
        "ok": ok,
        "failed": by_state[State.DONE] - ok,
        "error": by_state[State.ERROR],
    }


def best(jobs: Any, exp_key: str, n: int = 1, fields: Iterable[str] | None = None) -> list[dict]:
    """The ``n`` finished ok trials with the lowest numeric loss, best first."""
    query = _study(exp_key, state=int(State.DONE), **{"result.status": "ok"})
    query["result.loss"] = {"$type": "number"}  # None and NaN never rank
    projection = None if fields is None else list(dict.fromkeys([*fields, "result"]))
    return list(
        jobs.find(query, projection=projection, sort=[("result.loss", pymongo.ASCENDING)], limit=n)
    )


def trials(
    jobs: Any,
    exp_key: str | None,
    states: Iterable[State] | None = None,
    fields: Iterable[str] | None = None,
    *,
    tids: Iterable[int] | None = None,
    outcome: str | None = None,
    requeued: bool = False,
    limit: int = 0,
) -> list[dict]:
    """The study's trials in ``states`` (all when None), ordered by tid.

    ``outcome`` narrows finished trials to ``ok``/``failed``; ``requeued`` keeps trials that
    went back to the queue at least once; ``fields`` are top-level keys (nx-27017 returns
    dotted projections flat, so whole sub-documents are projected).
    """
    query = _trial_query(exp_key, states, tids=tids, outcome=outcome, requeued=requeued)
    projection = None if fields is None else list(dict.fromkeys(["tid", *fields]))
    return list(jobs.find(query, projection=projection, sort=[("tid", 1)], limit=limit))


def _trial_query(
    exp_key: str | None,
    states: Iterable[State] | None = None,
    *,
    tids: Iterable[int] | None = None,
    outcome: str | None = None,
    requeued: bool = False,
) -> dict[str, Any]:
    query = _study(exp_key)
    if states is not None:
        query["state"] = {"$in": [int(s) for s in states]}
    if tids is not None:
        query["tid"] = {"$in": list(tids)}
    if outcome == "ok":
        query["result.status"] = "ok"
    elif outcome == "failed":
        query["result.status"] = {"$ne": "ok"}
    if requeued:
        query["$or"] = [{"requeues": {"$gt": 0}}, {"attempts": {"$gt": 0}}]
    return query


def count(jobs: Any, exp_key: str | None, **narrow: Any) -> int:
    """How many trials :func:`trials` would return, counted by the server."""
    narrow.pop("limit", None)
    return int(jobs.count_documents(_trial_query(exp_key, **narrow)))


def history(metrics: Any, exp_key: str, tid: int) -> list[dict]:
    """One trial's per-epoch rows, in epoch order."""
    query = {"exp_key": exp_key, "tid": tid}
    return list(metrics.find(query, sort=[("epoch", pymongo.ASCENDING)]))


def studies(jobs: Any) -> list[str]:
    """Every exp_key in the database, sorted."""
    return sorted(k for k in jobs.distinct("exp_key") if k is not None)
