"""GPU slots and capacity leases, in a ``gpus`` collection keyed by ``host:index``.

A worker *slot* says which GPU a worker process is pinned to (claimed once at start, so
``--scale worker=4`` on a 2-GPU host spreads 2 and 2). A *lease* says how many capacity
units a running trial holds: light trials cost 1, heavy ones the whole GPU. Both expire
with the heartbeat, so a killed worker frees its GPU without anyone cleaning up. As with
trial leases, an expiry is the *server's* time (:mod:`shared.store.clock`) plus the
holder's own grace, and every reader compares it with the server's time: the ``now``
each function takes.

Each GPU document is changed by compare-and-swap on its ``v`` counter: read, compute the
new state in Python, write only if ``v`` is unchanged, else retry. That needs nothing
beyond single-document atomicity, which every MongoDB (and nx-27017) gives. Times are
epoch-second floats: nx-27017 loses the datetime type in nested fields.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from shared.errors import StoreError

log = logging.getLogger(__name__)
Mutator = Callable[[dict], "dict | None"]


def gpu_id(host: str, index: int) -> str:
    return f"{host}:{index}"


def ensure_gpus(gpus: Any, host: str, indices: list[int], capacity: int) -> None:
    """Create the host's GPU documents, and apply the current capacity to existing ones."""
    for index in indices:
        gpus.update_one(
            {"_id": gpu_id(host, index)},
            {"$setOnInsert": {"host": host, "index": index, "v": 0, "leases": [], "workers": []}},
            upsert=True,
        )
        gpus.update_one({"_id": gpu_id(host, index)}, {"$set": {"capacity": capacity}})


def _live(doc: dict, now: float) -> dict:
    doc["leases"] = [x for x in doc.get("leases", []) if x["expires"] > now]
    doc["workers"] = [w for w in doc.get("workers", []) if w["expires"] > now]
    return doc


def _cas(gpus: Any, gid: str, mutate: Mutator, now: float, retries: int = 50) -> dict | None:
    """Apply ``mutate`` to the live document atomically; None if it declined."""
    for attempt in range(retries):
        doc = gpus.find_one({"_id": gid})
        if doc is None:
            raise StoreError(
                f"GPU {gid} is not registered in the gpus collection (was it deleted?); "
                "restart the worker to register it again"
            )
        new = mutate(_live(dict(doc), now))
        if new is None:
            return None
        fields = {"leases": new["leases"], "workers": new["workers"], "v": doc["v"] + 1}
        if gpus.update_one({"_id": gid, "v": doc["v"]}, {"$set": fields}).modified_count:
            return new
        time.sleep(0.001 * (attempt + 1))
    raise StoreError(f"GPU document {gid} stayed contended for {retries} tries; retry later")


def used_units(doc: dict, now: float) -> int:
    return sum(x["units"] for x in _live(dict(doc), now)["leases"])


def claim_slot(
    gpus: Any,
    host: str,
    indices: list[int],
    worker: str,
    ttl: float,
    now: float,
    forced: int | None = None,
) -> int:
    """Pin ``worker`` to the GPU of ``host`` with the fewest live workers (or ``forced``)."""
    while True:
        docs = {d["index"]: _live(d, now) for d in gpus.find({"host": host})}
        candidates = (
            [forced]
            if forced is not None
            else sorted(indices, key=lambda i: (len(docs.get(i, {}).get("workers", [])), i))
        )
        target = candidates[0]
        seen = len(docs.get(target, {}).get("workers", []))

        def add(doc: dict, seen: int = seen) -> dict | None:
            if forced is None and len(doc["workers"]) != seen:
                return None  # someone else just took a slot: choose again
            doc["workers"] = [w for w in doc["workers"] if w["id"] != worker]
            doc["workers"].append({"id": worker, "expires": now + ttl})
            return doc

        if _cas(gpus, gpu_id(host, target), add, now) is not None:
            return target


def acquire(
    gpus: Any, gid: str, holder: str, units: int, capacity: int, ttl: float, now: float
) -> bool:
    """Take ``units`` of the GPU for one trial, if they fit under ``capacity``."""

    def take(doc: dict) -> dict | None:
        if sum(x["units"] for x in doc["leases"]) + units > capacity:
            return None
        doc["leases"].append({"id": holder, "units": units, "expires": now + ttl})
        return doc

    return _cas(gpus, gid, take, now) is not None


def renew(gpus: Any, gid: str, worker: str, holder: str | None, ttl: float, now: float) -> None:
    """Heartbeat: push back the expiry of the worker's slot and of its trial lease."""

    def extend(doc: dict) -> dict:
        expires = now + ttl
        for item in [*doc["workers"], *doc["leases"]]:
            if item["id"] in (worker, holder):
                item["expires"] = expires
        if not any(w["id"] == worker for w in doc["workers"]):
            doc["workers"].append({"id": worker, "expires": expires})
        return doc

    _cas(gpus, gid, extend, now)


def release(gpus: Any, gid: str, holder: str, now: float) -> None:
    def drop(doc: dict) -> dict:
        doc["leases"] = [x for x in doc["leases"] if x["id"] != holder]
        doc["workers"] = [w for w in doc["workers"] if w["id"] != holder]
        return doc

    _cas(gpus, gid, drop, now)
