"""One coordinator per study at a time: a lease in the ``coordinators`` collection.

Two coordinators on one ``exp_key`` (with one ``--seed``) would post the same trials twice.
The lease follows the rule of every lease in Strix: its expiry is the server's time plus
the *holder's* grace, and a claimant compares it with the server's time, so neither clock
skew nor another coordinator's settings can take a live coordinator's study.
"""

from __future__ import annotations

from typing import Any

import pymongo.errors


def claim(coll: Any, exp_key: str, holder: str, grace: float, now: float) -> str | None:
    """Take or renew the lease of ``exp_key``; None when held, else the live holder's id.

    Atomic in one document: an expired or own lease is taken over by a guarded update;
    a missing one is created by an insert, which the unique ``_id`` lets only one win.
    """
    fields = {"holder": holder, "expires": now + grace, "grace": grace}
    free = {"_id": exp_key, "$or": [{"holder": holder}, {"expires": {"$lt": now}}]}
    if coll.update_one(free, {"$set": fields}).matched_count:
        return None
    try:
        coll.insert_one({"_id": exp_key, **fields})
        return None
    except pymongo.errors.DuplicateKeyError:
        doc = coll.find_one({"_id": exp_key}) or {}
        return str(doc.get("holder", "another coordinator"))


def release(coll: Any, exp_key: str, holder: str) -> None:
    """Give the lease up at the end of a run (a crash lets it expire instead)."""
    coll.delete_one({"_id": exp_key, "holder": holder})
