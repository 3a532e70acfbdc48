"""hyperopt's ``MongoTrials`` on pymongo 4: what ``fmin`` posts trials through.

Each posted job is also stamped with the model's resource class and Strix's version, so
workers can pack light trials onto a GPU, keep heavy ones alone, and refuse jobs from a
different Strix release.
"""

from __future__ import annotations

import logging
from typing import Any

import gridfs
import pymongo
from hyperopt.mongoexp import MongoTrials

from shared import __version__
from shared.store.client import guard_methods, guarded
from shared.store.jobs import StrixMongoJobs

log = logging.getLogger(__name__)


class Attachments:
    """Trials-level attachments (the pickled Domain lives here), scoped by ``exp_key``."""

    def __init__(self, handle: StrixMongoJobs, exp_key: str | None) -> None:
        self.fs = handle.gfs
        self.exp_key = exp_key

    @guarded
    def __iter__(self) -> Any:
        return iter([n for n in self.fs.list() if n in self])

    @guarded
    def __contains__(self, name: str) -> bool:
        return self.fs.exists(name, self.exp_key)

    @guarded
    def __getitem__(self, name: str) -> bytes:
        try:
            return self.fs.get_version(name, self.exp_key).read()
        except gridfs.errors.NoFile:
            raise KeyError(name) from None

    @guarded
    def __setitem__(self, name: str, value: bytes) -> None:
        old = self.fs.fs.find({"filename": self.fs._name(name, self.exp_key)})
        old_ids = [f._id for f in old]
        self.fs.put(value, name, self.exp_key)
        for file_id in old_ids:
            self.fs.delete(file_id)

    @guarded
    def __delitem__(self, name: str) -> None:
        self.fs.delete(self.fs.get_version(name, self.exp_key)._id)


@guard_methods
class StrixMongoTrials(MongoTrials):
    """Drop-in for hyperopt's ``MongoTrials``: ``fmin(..., trials=StrixMongoTrials(...))``."""

    def __init__(
        self,
        handle: StrixMongoJobs,
        exp_key: str | None = None,
        *,
        resource: str = "light",
        meta: dict | None = None,
        refresh: bool = True,
    ) -> None:
        self.resource = resource
        self.meta = dict(meta or {})
        super().__init__(handle, exp_key=exp_key, refresh=refresh)

    def view(
        self, exp_key: str | None = None, cmd: Any = None, workdir: Any = None, refresh: bool = True
    ) -> StrixMongoTrials:
        return StrixMongoTrials(
            self.handle,
            exp_key or self._exp_key,
            resource=self.resource,
            meta=self.meta,
            refresh=refresh,
        )

    def _insert_trial_docs(self, docs: list[dict]) -> list[Any]:
        stamp = {"resource": self.resource, "strix": {"version": __version__, **self.meta}}
        return [self.handle.insert({**doc, **stamp})["_id"] for doc in docs]

    def count_by_state_unsynced(self, arg: int | list[int]) -> int:
        states = [arg] if isinstance(arg, int) else list(arg)
        query: dict[str, Any] = {"state": {"$in": states}}
        if self._exp_key is not None:
            query["exp_key"] = self._exp_key
        return self.handle.jobs.count_documents(query)

    def new_trial_ids(self, n: int) -> list[int]:
        """Database-wide unique tids from the ``job_ids`` counter, as hyperopt allocates them."""
        doc = self.handle.db.job_ids.find_one_and_update(
            {"a": 0},
            {"$inc": {"last_id": n}},
            upsert=True,
            return_document=pymongo.ReturnDocument.BEFORE,
        )
        last = (doc or {}).get("last_id", 0)
        return list(range(last, last + n))

    def delete_all(self, cond: dict | None = None) -> None:
        cond = dict(cond or {})
        if self._exp_key:
            cond["exp_key"] = self._exp_key
        self.handle.delete_all(cond)
        self.refresh()

    @property
    def attachments(self) -> Attachments:  # type: ignore[override]
        return Attachments(self.handle, self._exp_key)
