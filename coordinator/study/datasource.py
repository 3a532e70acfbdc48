"""Which Fashion-MNIST copy a study trains on, recorded with the study.

launch records ``{"dir": ..., "hash": ...}`` in every job's ``strix.data_source``, so a
resumed launch, ``final`` and ``report`` find the same files in a new shell without
``--data-dir``, and say so clearly when the files there have changed since.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from shared.errors import DataError
from shared.store import Store

log = logging.getLogger(__name__)


def recorded_source(store: Store, exp_key: str) -> dict | None:
    """The data source the study recorded when it was first launched, if any."""
    docs = store.trials_in(exp_key, fields=["strix"], limit=1)
    return ((docs[0].get("strix") or {}).get("data_source") or None) if docs else None


def _hash_of(directory: Path) -> str:
    from shared.data.idx import load_raw, source_hash

    return source_hash(load_raw(directory))


def study_source(store: Store, exp_key: str, data_dir: str | None) -> dict:
    """The source to use now: ``data_dir`` when given, else the recorded one when it still
    exists, else whatever the library finds. A changed copy is reported, not hidden."""
    from shared.data.idx import find_data_dir

    recorded = recorded_source(store, exp_key)
    if data_dir is None and recorded and recorded.get("dir") and Path(recorded["dir"]).is_dir():
        data_dir = recorded["dir"]
        log.info("study %s: using its recorded data in %s", exp_key, data_dir)
    found = find_data_dir(data_dir)
    if found is None:
        return {"dir": None, "hash": None}
    current = {"dir": os.path.abspath(found), "hash": _hash_of(found)}
    old = (recorded or {}).get("hash")
    if old and old != current["hash"]:
        log.warning(
            "study %s was run on data with hash %s..., but %s now holds %s...: its trials "
            "are not comparable with new ones; pass --data-dir with the original copy",
            exp_key,
            old[:12],
            found,
            current["hash"][:12],
        )
    return current


def check_unchanged(recorded: dict | None, current_hash: str) -> None:
    """For commands that must not mix data (final, report): refuse a changed copy."""
    if recorded and recorded.get("hash") and recorded["hash"] != current_hash:
        raise DataError(
            f"the data source changed since the study ran (hash {recorded['hash'][:12]}... "
            f"recorded, {current_hash[:12]}... now); pass --data-dir with the study's copy"
        )
