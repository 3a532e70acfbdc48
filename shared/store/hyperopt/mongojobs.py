"""hyperopt's ``MongoJobs`` on pymongo 4, with its signature, job schema and protocol.

hyperopt 0.3.0 calls ``insert``/``update``/``find_and_modify``/``Cursor.count`` and
``Database.authenticate``, which pymongo 4 removed. This subclass overrides each of
those, so ``fmin``, hyperopt's own ``MongoWorker`` and any script written against
``hyperopt.mongoexp.MongoJobs`` run unchanged on top of it.
"""

from __future__ import annotations

import copy
import logging
from typing import Any
from urllib.parse import quote_plus

import gridfs
import pymongo
import pymongo.errors
from hyperopt import mongoexp

from shared.errors import StoreError, StoreUsageError
from shared.store.client import MongoTarget, guard_methods, make_client, parse_target, translated
from shared.store.codec import encode, with_codec
from shared.store.queue import take
from shared.store.reads import State

log = logging.getLogger(__name__)

_SEP = "\x1f@exp:"


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

    def ids(self, filename: str, exp_key: str | None = None) -> list[Any]:
        """Every stored version of one attachment."""
        return [f._id for f in self.fs.find({"filename": self._name(filename, exp_key)})]

    def scoped_ids(self, exp_key: str | None) -> list[Any]:
        """Every file of one study (all files when ``exp_key`` is None, as hyperopt does)."""
        files = self.fs.find({})
        return [f._id for f in files if exp_key is None or f.filename.endswith(_SEP + exp_key)]

    def get(self, file_id: Any) -> Any:
        return self.fs.get(file_id)

    def delete(self, file_id: Any) -> None:
        self.fs.delete(file_id)

    def list(self) -> list[str]:
        return sorted({n.split(_SEP)[0] for n in self.fs.list()})


@guard_methods
class MongoJobs(mongoexp.MongoJobs):
    """pymongo-4-native ``MongoJobs``: same constructor, collections, documents, protocol.

    ``MongoJobs(db, jobs, gfs, conn, tunnel, config_name)`` as in hyperopt; ``jobs`` may
    also be a collection name and ``gfs`` may be omitted (bucket ``fs`` of ``db``).
    """

    def __init__(
        self,
        db: Any,
        jobs: Any = "jobs",
        gfs: Any = None,
        conn: Any = None,
        tunnel: Any = None,
        config_name: str = "spec",
        *,
        target: MongoTarget | None = None,
    ) -> None:
        db = with_codec(db)
        jobs = db[jobs] if isinstance(jobs, str) else with_codec(jobs)
        gfs = gridfs.GridFS(db, collection="fs") if gfs is None else gfs
        gfs = gfs if isinstance(gfs, ScopedGridFS) else ScopedGridFS(gfs)
        self.target = target
        super().__init__(db, jobs, gfs, conn or db.client, tunnel, config_name)

    @classmethod
    def new_from_connection_str(
        cls, conn_str: str, gfs_coll: str = "fs", config_name: str = "spec"
    ) -> MongoJobs:
        """``mongo://[user:pass@]host:port/db/jobs`` as in hyperopt, or a ``mongodb://`` URI."""
        target = parse_target(conn_str)
        client = make_client(target)
        db = client[target.db]
        gfs = gridfs.GridFS(with_codec(db), collection=gfs_coll)
        return cls(db, target.collection, gfs, client, None, config_name, target=target)

    @classmethod
    def alloc(
        cls,
        dbname: str,
        host: str = "localhost",
        auth_dbname: str = "admin",
        port: int = 27017,
        jobs_coll: str = "jobs",
        gfs_coll: str = "fs",
        ssh: bool = False,
        user: str | None = None,
        pw: str | None = None,
    ) -> MongoJobs:
        if ssh:
            raise StoreError(
                "ssh=True: Strix opens no SSH tunnels; run `ssh -NL 27017:127.0.0.1:27017 "
                "HOST` yourself and connect to localhost"
            )
        auth = f"{quote_plus(user)}:{quote_plus(pw or '')}@" if user else ""
        query = f"?authSource={auth_dbname}" if user else ""
        url = f"mongodb://{auth}{host}:{int(port)}/{dbname}{query}"
        target = MongoTarget(parse_target(url).uri, dbname, jobs_coll)
        client = make_client(target)
        db = client[dbname]
        gfs = gridfs.GridFS(with_codec(db), collection=gfs_coll)
        return cls(db, jobs_coll, gfs, client, None, "spec", target=target)

    def __len__(self) -> int:
        return self.jobs.count_documents({})

    def create_jobs_indexes(self) -> None:
        for key in ("exp_key", "state", "tid", "refresh_time", "book_time", "result.loss"):
            self.jobs.create_index(key)
        self.jobs.create_index([("exp_key", 1), ("state", 1), ("tid", 1)])

    def create_drivers_indexes(self) -> None:
        """hyperopt's unused ``drivers`` collection is not created; the tid counter is
        made unique instead, so two posters can never create two counters."""
        try:
            self.db.job_ids.create_index("a", unique=True)
        except pymongo.errors.OperationFailure as e:
            log.warning("job_ids counter is not unique (%s); tids may repeat", e)

    def insert(self, job: dict) -> dict:
        doc = copy.deepcopy(job)
        doc["_id"] = self.jobs.insert_one(encode(doc)).inserted_id
        return doc

    def delete(self, job: dict) -> None:
        self.jobs.delete_one({"_id": job["_id"]})

    def delete_all(self, cond: dict | None = None) -> None:
        """Delete the matching jobs and their trial attachments (GridFS files too)."""
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
            raise StoreUsageError("refusing to reserve owned job")
        if exp_key is not None:
            query["exp_key"] = exp_key
        query.update(owner=None, state=State.NEW)
        return take(self.jobs, host_id, query)

    def update(
        self, doc: dict, dct: dict, collection: Any = None, do_sanity_checks: bool = True
    ) -> dict:
        """Optimistic update on ``version``, as hyperopt does it (its update() semantics)."""
        collection = self.jobs if collection is None else with_codec(collection)
        dct = copy.deepcopy(dct)
        if "_id" not in doc:
            raise StoreUsageError('doc must have an "_id" key to be updated')
        if dct.pop("_id", doc["_id"]) != doc["_id"]:
            raise StoreUsageError("cannot update the _id field")
        query = {"_id": doc["_id"]}
        if "version" in doc:
            query["version"] = doc["version"]
            dct["version"] = doc["version"] + 1
        else:
            dct["version"] = 1
        # the matched count, not a read-back: a read-back would take another writer's
        # version bump (the reaper's) as proof that this write landed
        matched = collection.update_one(query, {"$set": encode(dct)}).matched_count
        if do_sanity_checks and not matched:
            raise StoreError(
                f"job {doc['_id']} changed under us (version {doc.get('version')} is gone): "
                "another process updated it (was it reaped?); refresh and retry"
            )
        doc.update(dct)
        return doc

    def count(self, query: dict) -> int:
        return self.jobs.count_documents(query)


def open_jobs(target: MongoTarget, timeout_ms: int | None = None) -> MongoJobs:
    """The ``MongoJobs`` of a parsed target, on a client of its own."""
    client = make_client(target, timeout_ms)
    with translated(target.redacted):
        return MongoJobs(client[target.db], target.collection, None, client, target=target)


StrixMongoJobs = MongoJobs  # the name used before the hyperopt-compatible API
