"""Trained models of a study in GridFS, each with its provenance.

A final model lives beside the trials that chose it, so whoever can read a study can also
fetch the exact model it produced and see how it was made. The bytes go into the GridFS
bucket ``models`` (collections ``models.files`` / ``models.chunks``); the provenance is the
file's standard ``metadata`` field, so it is queryable without downloading the model::

    db["models.files"].find({"metadata.exp_key": "convstrix-128px"})

Saving again under the same name adds a new version; readers get the newest one.
These functions take the Store's ``db`` (``store.db``) and raise only StoreError subclasses.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import gridfs
import pymongo

from shared.errors import StoreError
from shared.store.client import translated
from shared.store.codec import encode

log = logging.getLogger(__name__)

BUCKET = "models"


def model_filename(exp_key: str, name: str) -> str:
    return f"{exp_key}/{name}.keras"


def _target(db: Any) -> str:
    return f"MongoDB (db {getattr(db, 'name', '?')})"


def store_model(db: Any, exp_key: str, name: str, blob: bytes, provenance: dict) -> Any:
    """Store one model version; returns its GridFS file id."""
    metadata = {
        "exp_key": exp_key,
        "name": name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
        "provenance": encode(provenance),
    }
    with translated(_target(db)):
        fs = gridfs.GridFS(db, collection=BUCKET)
        file_id = fs.put(blob, filename=model_filename(exp_key, name), metadata=metadata)
    log.info("stored model %s of %s (%d bytes)", name, exp_key, len(blob))
    return file_id


def fetch_model(db: Any, exp_key: str, name: str = "final") -> tuple[bytes, dict]:
    """The newest stored version of a model: (bytes, metadata incl. provenance).

    Raises StoreError when the study has no such model, saying how to make one.
    """
    with translated(_target(db)):
        fs = gridfs.GridFS(db, collection=BUCKET)
        try:
            grid_out = fs.get_last_version(filename=model_filename(exp_key, name))
        except gridfs.errors.NoFile:
            raise StoreError(
                f"study {exp_key!r} has no stored model {name!r} in {_target(db)}; run "
                f"`python -m coordinator.final --exp-key {exp_key}` first"
            ) from None
        blob = grid_out.read()
        metadata = dict(grid_out.metadata or {})
    if metadata.get("sha256") not in (None, hashlib.sha256(blob).hexdigest()):
        raise StoreError(
            f"stored model {name!r} of {exp_key!r} is corrupt (sha256 mismatch); "
            "run coordinator.final again to store a fresh copy"
        )
    return blob, metadata


def latest_provenance(db: Any, exp_key: str, name: str = "final") -> dict | None:
    """The provenance of the newest model, without reading its bytes; None if there is none."""
    with translated(_target(db)):
        docs = list(
            db[f"{BUCKET}.files"].find(
                {"filename": model_filename(exp_key, name)},
                projection=["metadata", "uploadDate"],
                sort=[("uploadDate", pymongo.DESCENDING)],
                limit=1,
            )
        )
    if not docs:
        return None
    return (docs[0].get("metadata") or {}).get("provenance")


__all__ = ["BUCKET", "fetch_model", "latest_provenance", "model_filename", "store_model"]
