"""hyperopt's ``MongoTrials`` on pymongo 4: what ``fmin`` posts trials through.

``MongoTrials('mongo://host:port/db/jobs', exp_key='exp1')`` works exactly as in
hyperopt. Each posted job is also stamped with a resource class and Strix's version, so
Strix workers can pack light trials onto a GPU, keep heavy ones alone, and refuse jobs
from a different Strix release; stock hyperopt workers ignore the stamp.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import gridfs
import pymongo
import pymongo.errors
from hyperopt import mongoexp
from hyperopt.base import JOB_STATES

from shared import __version__
from shared.errors import MissingAttachment, StoreError, StoreUsageError
from shared.store.client import guard_methods, guarded
from shared.store.hyperopt.mongojobs import MongoJobs

log = logging.getLogger(__name__)


class Attachments:
    """Study-level attachments (the pickled Domain lives here), scoped by ``exp_key``."""

    def __init__(self, handle: MongoJobs, exp_key: str | None) -> None:
        self.fs = handle.gfs
        self.exp_key = exp_key

    @guarded
    def __iter__(self) -> Iterator[str]:
        return iter([n for n in self.fs.list() if n in self])

    @guarded
    def __contains__(self, name: str) -> bool:
        return self.fs.exists(name, self.exp_key)

    @guarded
    def __getitem__(self, name: str) -> bytes:
        try:
            return self.fs.get_version(name, self.exp_key).read()
        except gridfs.errors.NoFile:
            raise MissingAttachment(name) from None

    @guarded
    def __setitem__(self, name: str, value: bytes | str) -> None:
        old_ids = self.fs.ids(name, self.exp_key)
        self.fs.put(value, name, self.exp_key)
        for file_id in old_ids:
            self.fs.delete(file_id)

    @guarded
    def __delitem__(self, name: str) -> None:
        old_ids = self.fs.ids(name, self.exp_key)
        if not old_ids:
            raise MissingAttachment(name)
        for file_id in old_ids:
            self.fs.delete(file_id)

    def keys(self) -> list[str]:
        return list(self)


class TrialAttachments:
    """One trial's attachments (e.g. learned weights), stored as hyperopt stores them."""

    def __init__(self, handle: MongoJobs, trial: dict) -> None:
        self.handle, self.trial = handle, trial

    def __contains__(self, name: str) -> bool:
        return name in self.handle.attachment_names(doc=self.trial)

    def __len__(self) -> int:
        return len(self.handle.attachment_names(doc=self.trial))

    def __iter__(self) -> Iterator[str]:
        return iter(self.handle.attachment_names(doc=self.trial))

    @guarded
    def __getitem__(self, name: str) -> bytes:
        if name not in self:
            raise MissingAttachment(name)
        return self.handle.get_attachment(doc=self.trial, name=name)

    @guarded
    def __setitem__(self, name: str, value: bytes) -> None:
        self.handle.set_attachment(doc=self.trial, blob=value, name=name)

    @guarded
    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise MissingAttachment(name)
        self.handle.delete_attachment(doc=self.trial, name=name)

    def keys(self) -> list[str]:
        return list(self)

    def values(self) -> list[bytes]:
        return [self[k] for k in self]

    def items(self) -> list[tuple[str, bytes]]:
        return [(k, self[k]) for k in self]


def _handle(arg: Any) -> MongoJobs:
    if isinstance(arg, MongoJobs):
        return arg
    if isinstance(arg, mongoexp.MongoJobs):  # hyperopt's own class: rewrap its database
        return MongoJobs(arg.db, arg.jobs, arg.gfs, arg.conn, arg.tunnel, arg.config_name)
    if isinstance(arg, str):
        return MongoJobs.new_from_connection_str(arg)
    raise StoreUsageError(
        f"MongoTrials got a {type(arg).__name__}; expected a 'mongo://host:port/db/jobs' "
        "string, a mongodb:// URI or a MongoJobs"
    )


@guard_methods
class MongoTrials(mongoexp.MongoTrials):
    """Drop-in for hyperopt's ``MongoTrials``; Strix's stamps are keyword-only extras."""

    def __init__(
        self,
        arg: Any,
        exp_key: str | None = None,
        cmd: Any = None,
        workdir: Any = None,
        refresh: bool = True,
        *,
        resource: str = "light",
        meta: dict | None = None,
    ) -> None:
        self.resource = resource
        self.meta = dict(meta or {})
        self.handle = _handle(arg)
        self.handle.create_indexes()
        self._exp_key, self.cmd, self.workdir = exp_key, cmd, workdir
        if refresh:
            self.refresh()

    def view(
        self, exp_key: str | None = None, cmd: Any = None, workdir: Any = None, refresh: bool = True
    ) -> MongoTrials:
        return type(self)(
            self.handle,
            self._exp_key if exp_key is None else exp_key,
            self.cmd if cmd is None else cmd,
            self.workdir if workdir is None else workdir,
            refresh,
            resource=self.resource,
            meta=self.meta,
        )

    def _insert_trial_docs(self, docs: list[dict]) -> list[Any]:
        stamp = {"resource": self.resource, "strix": {"version": __version__, **self.meta}}
        return [self.handle.insert({**doc, **stamp})["_id"] for doc in docs]

    def count_by_state_unsynced(self, arg: int | list[int]) -> int:
        states = [arg] if isinstance(arg, int) else list(arg)
        if not all(s in JOB_STATES for s in states):
            raise StoreUsageError(f"invalid job state(s) {states}; expected some of {JOB_STATES}")
        query: dict[str, Any] = {"state": {"$in": states}}
        if self._exp_key is not None:
            query["exp_key"] = self._exp_key
        return self.handle.jobs.count_documents(query)

    def new_trial_ids(self, n: int) -> list[int]:
        """Database-wide unique tids from hyperopt's ``job_ids`` counter.

        The counter document is created by an upsert; with the unique index on ``a`` two
        posters racing to create it cannot both win, and the loser simply retries.
        """
        for attempt in range(20):
            try:
                doc = self.handle.db.job_ids.find_one_and_update(
                    {"a": 0},
                    {"$inc": {"last_id": n}},
                    upsert=True,
                    return_document=pymongo.ReturnDocument.BEFORE,
                )
            except pymongo.errors.DuplicateKeyError:
                time.sleep(0.01 * (attempt + 1))
                continue
            last = (doc or {}).get("last_id", 0)
            return list(range(last, last + n))
        raise StoreError("could not allocate trial ids: the job_ids counter stayed contended")

    def delete_all(self, cond: dict | None = None) -> None:
        """Delete the study's jobs, their trial attachments and its study attachments."""
        cond = dict(cond or {})
        if self._exp_key:
            cond["exp_key"] = self._exp_key
        self.handle.delete_all(cond)
        for file_id in self.handle.gfs.scoped_ids(self._exp_key):
            self.handle.gfs.delete(file_id)
        self.refresh()

    def trial_attachments(self, trial: dict) -> TrialAttachments:  # type: ignore[override]
        return TrialAttachments(self.handle, trial)

    @property
    def attachments(self) -> Attachments:  # type: ignore[override]
        return Attachments(self.handle, self._exp_key)


StrixMongoTrials = MongoTrials  # the name used before the hyperopt-compatible API
