"""hyperopt's ``MongoJobs`` rewritten on pymongo 4, keeping its job schema exactly.

hyperopt 0.3.0 calls ``insert``/``update``/``find_and_modify``/``Cursor.count``, which
pymongo 4 removed. This subclass overrides each of those, so hyperopt's own worker
(``hyperopt.mongoexp.MongoWorker``) and ``fmin`` run unchanged on top of it.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import gridfs
import pymongo
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, JOB_STATE_NEW, JOB_STATE_RUNNING
from hyperopt.mongoexp import MongoJobs, OperationFailure
from hyperopt.utils import coarse_utcnow

from shared.store.client import guard_methods

log = logging.getLogger(__name__)

STATES = {
    JOB_STATE_NEW: "new",
    JOB_STATE_RUNNING: "running",
    JOB_STATE_DONE: "done",
    JOB_STATE_ERROR: "error",
}
_SEP = "\x1f@exp:"


def sanitize(value: Any) -> Any:
    """Make a value storable everywhere: NaN/inf become None (nx-27017 rejects them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return sanitize(value.item())
    return value


class ScopedGridFS:
    """A GridFS facade whose extra ``exp_key`` field lives in the file name.

    hyperopt filters Trials attachments by an ``exp_key`` field on the GridFS file.
    nx-27017 drops extra file fields, so the key is folded into the stored name
    (``name<US>@exp:key``); that works identically on a real MongoDB.
    """

    def __init__(self, fs: gridfs.GridFS) -> None:
        self.fs = fs

    @staticmethod
    def _name(filename: str, exp_key: str | None = None) -> str:
        return filename if exp_key is None else f"{filename}{_SEP}{exp_key}"

    def put(self, data: Any, filename: str, exp_key: str | None = None, **kw: Any) -> Any:
        if isinstance(data, str):
            data = data.encode(kw.pop("encoding", "utf-8"))
        return self.fs.put(data, filename=self._name(filename, exp_key))

    def exists(self, filename: str, exp_key: str | None = None) -> bool:
        return self.fs.exists(filename=self._name(filename, exp_key))

    def get_version(self, filename: str, exp_key: str | None = None, version: int = -1) -> Any:
        return self.fs.get_version(filename=self._name(filename, exp_key), version=version)

    def get_last_version(self, filename: str, exp_key: str | None = None) -> Any:
        return self.get_version(filename, exp_key)

    def get(self, file_id: Any) -> Any:
        return self.fs.get(file_id)

    def delete(self, file_id: Any) -> None:
        self.fs.delete(file_id)

    def list(self) -> list[str]:
        return sorted({n.split(_SEP)[0] for n in self.fs.list()})


def take(jobs: Any, owner: Any, query: dict, extra: dict | None = None) -> dict | None:
    """Atomically turn the oldest job matching ``query`` into RUNNING for ``owner``."""
    now = coarse_utcnow()
    fields = {"owner": owner, "book_time": now, "refresh_time": now, "state": JOB_STATE_RUNNING}
    return jobs.find_one_and_update(
        query,
        {"$set": {**fields, **(extra or {})}, "$inc": {"version": 1}},
        sort=[("tid", pymongo.ASCENDING)],
        return_document=pymongo.ReturnDocument.AFTER,
    )


@guard_methods
class StrixMongoJobs(MongoJobs):
    """pymongo-4-native ``MongoJobs``: same collections, same documents, same protocol."""

    def __init__(self, db: Any, collection: str = "jobs", target: Any = None) -> None:
        self.target = target
        fs = ScopedGridFS(gridfs.GridFS(db, collection="fs"))
        super().__init__(db, db[collection], fs, db.client, None, "spec")

    def __len__(self) -> int:
        return self.jobs.count_documents({})

    def create_jobs_indexes(self) -> None:
        for key in ("exp_key", "state", "tid", "refresh_time", "book_time"):
            self.jobs.create_index(key)
        self.jobs.create_index([("exp_key", 1), ("state", 1), ("tid", 1)])

    def create_drivers_indexes(self) -> None:
        """hyperopt's unused ``drivers`` collection is not created."""

    def insert(self, job: dict) -> dict:
        doc = sanitize(copy.deepcopy(job))
        doc["_id"] = self.jobs.insert_one(doc).inserted_id
        return doc

    def delete(self, job: dict) -> None:
        self.jobs.delete_one({"_id": job["_id"]})

    def delete_all(self, cond: dict | None = None) -> None:
        for d in self.jobs.find(cond or {}, projection=["_id", "_attachments"]):
            for _name, file_id in d.get("_attachments", []):
                try:
                    self.gfs.delete(file_id)
                except gridfs.errors.NoFile:
                    log.warning("attachment %s of job %s already gone", file_id, d["_id"])
            self.jobs.delete_one({"_id": d["_id"]})

    def reserve(self, host_id: Any, cond: dict | None = None, exp_key: str | None = None) -> Any:
        """hyperopt's reservation: the oldest NEW job of ``exp_key`` becomes RUNNING, atomically."""
        query = dict(cond or {})
        if query.get("owner") is not None:
            raise ValueError("refusing to reserve owned job")
        if exp_key is not None:
            query["exp_key"] = exp_key
        query.update(owner=None, state=JOB_STATE_NEW)
        return take(self.jobs, host_id, query)

    def update(
        self, doc: dict, dct: dict, collection: Any = None, do_sanity_checks: bool = True
    ) -> dict:
        """Optimistic update on ``version``, as hyperopt does it (its update() semantics)."""
        collection = self.jobs if collection is None else collection
        dct = sanitize(copy.deepcopy(dct))
        if "_id" not in doc:
            raise ValueError('doc must have an "_id" key to be updated')
        if dct.pop("_id", doc["_id"]) != doc["_id"]:
            raise ValueError("cannot update the _id field")
        query = {"_id": doc["_id"]}
        if "version" in doc:
            query["version"] = doc["version"]
            dct["version"] = doc["version"] + 1
        else:
            dct["version"] = 1
        collection.update_one(query, {"$set": dct})
        doc.update(dct)
        if (
            do_sanity_checks
            and collection.find_one(
                {"_id": doc["_id"], "version": doc["version"]}, projection=["_id"]
            )
            is None
        ):
            raise OperationFailure(f"updated doc not found: _id={doc['_id']}")
        return doc

    def count(self, query: dict) -> int:
        return self.jobs.count_documents(query)


__all__ = [
    "JOB_STATE_DONE",
    "JOB_STATE_ERROR",
    "JOB_STATE_NEW",
    "JOB_STATE_RUNNING",
    "STATES",
    "ScopedGridFS",
    "StrixMongoJobs",
    "sanitize",
]
