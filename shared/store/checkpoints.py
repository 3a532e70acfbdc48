"""Where trial checkpoints live: GridFS by default, a shared directory as an option.

A checkpoint is written whole first (a new GridFS file, or a temporary file renamed into
place), then made current by one guarded update of the job's ``checkpoint`` pointer:
that update is the commit. A reader follows the pointer, so it sees the previous
checkpoint or the new one, never half of one; a worker that lost the trial (it was
reaped, another worker holds it) fails the guard, and its file is deleted unseen.

The pointer names the file by id (GridFS) or by a generated name (directory), never by a
path: a job document cannot make a worker read an arbitrary file (:func:`dir_path`).
All files of one trial share one GridFS file name (``<exp_key>/<tid>`` in the bucket
``checkpoints``), as versions, so cleaning up a finished trial also removes the files a
zombie worker left. Names carry the key because nx-27017 drops extra GridFS fields.

The best ``--keep-best`` trials' final models go to the ``models`` bucket
(:mod:`shared.store.exports`) as ``trial-<tid>``, for ``strix results --export``.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import gridfs
import pymongo
from bson import ObjectId

from shared.store import exports, queue
from shared.store.reads import State

log = logging.getLogger(__name__)

BUCKET = "checkpoints"
_NAME = re.compile(r"^[0-9]+-[0-9a-f]{16}\.npz$")


def guard(job: dict, owner: str, states: tuple[State, ...] = (State.RUNNING,)) -> dict:
    """The one filter every checkpoint write and delete goes through: the job is still
    ``owner``'s in this attempt (:func:`shared.store.queue.owned`), and RUNNING, or just
    finished by it for the clean-up."""
    state: Any = states[0] if len(states) == 1 else {"$in": [int(s) for s in states]}
    return {**queue.owned(job, owner), "state": state}


def trial_file(job: dict) -> str:
    return f"{job.get('exp_key')}/{job.get('tid')}"


def dir_path(root: str, job: dict, name: str) -> Path:
    """The file of a directory checkpoint; ``name`` (from the job) must be one we made."""
    if not _NAME.match(str(name)):
        raise ValueError(f"refusing checkpoint name {name!r} from the job document")
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", str(job.get("exp_key")))
    return Path(root).expanduser() / key / str(name)


def save(
    db: Any, jobs: Any, job: dict, owner: str, blob: bytes, info: dict, root: str | None
) -> bool:
    """Store ``blob`` as the trial's checkpoint; False (and nothing kept) when the trial
    is no longer ``owner``'s."""
    if root is None:
        fs = gridfs.GridFS(db, collection=BUCKET)
        ref: dict[str, Any] = {"file": str(fs.put(blob, filename=trial_file(job)))}
    else:
        name = f"{job.get('tid')}-{secrets.token_hex(8)}.npz"
        path = dir_path(root, job, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)  # atomic on one file system
        ref = {"name": name}
    pointer = {**ref, **info, "saved": time.time(), "bytes": len(blob)}
    before = jobs.find_one_and_update(
        guard(job, owner),
        {"$set": {"checkpoint": pointer}},
        projection=["checkpoint"],
        return_document=pymongo.ReturnDocument.BEFORE,
    )
    if before is None:
        _drop(db, job, pointer, root)
        return False
    if before.get("checkpoint"):
        _drop(db, job, before["checkpoint"], root)
    return True


def load(db: Any, job: dict, root: str | None) -> bytes | None:
    """The checkpoint the job's pointer names (as reserved), or None."""
    pointer = job.get("checkpoint") or None
    if not isinstance(pointer, dict):
        return None
    try:
        if "file" in pointer:
            return gridfs.GridFS(db, collection=BUCKET).get(ObjectId(pointer["file"])).read()
        if "name" in pointer and root is not None:
            return dir_path(root, job, pointer["name"]).read_bytes()
    except (gridfs.errors.NoFile, OSError, ValueError) as exc:
        log.warning("trial %s: its checkpoint cannot be read (%s)", job.get("tid"), exc)
    return None


def clear(db: Any, jobs: Any, job: dict, owner: str, root: str | None) -> bool:
    """Delete a finished trial's checkpoints (every version, a zombie's included)."""
    done = (State.DONE, State.ERROR)
    doc = jobs.find_one_and_update(
        guard(job, owner, done), {"$set": {"checkpoint": None}}, projection=["checkpoint"]
    )
    if doc is None:
        return False
    fs = gridfs.GridFS(db, collection=BUCKET)
    for f in fs.find({"filename": trial_file(job)}):
        fs.delete(f._id)
    if doc.get("checkpoint") and root is not None:
        _drop(db, job, doc["checkpoint"], root)
    return True


def _drop(db: Any, job: dict, pointer: dict, root: str | None) -> None:
    try:
        if "file" in pointer:
            gridfs.GridFS(db, collection=BUCKET).delete(ObjectId(pointer["file"]))
        elif "name" in pointer and root is not None:
            dir_path(root, job, pointer["name"]).unlink(missing_ok=True)
    except (OSError, ValueError) as exc:
        log.warning("could not delete an old checkpoint of trial %s: %s", job.get("tid"), exc)


# --- the final models of the best trials --------------------------------------------------


def kept_name(tid: Any) -> str:
    return f"trial-{tid}"


def qualifies(jobs: Any, job: dict, loss: float, keep: int) -> bool:
    """Whether a trial with ``loss`` is among the study's ``keep`` best finished ones."""
    if keep <= 0:
        return False
    better = jobs.count_documents(
        {
            "exp_key": job.get("exp_key"),
            "state": int(State.DONE),
            "result.status": "ok",
            "result.loss": {"$lt": float(loss)},
        }
    )
    return int(better) < keep


def keep_model(
    db: Any, jobs: Any, job: dict, owner: str, blob: bytes, loss: float, keep: int
) -> bool:
    """Store the trial's final model when it ranks among the ``keep`` best, then delete
    the kept models that no longer do; False when it does not qualify or is not ours."""
    if not qualifies(jobs, job, loss, keep):
        return False
    exp_key = str(job.get("exp_key"))
    provenance = {"tid": job.get("tid"), "loss": float(loss), "owner": owner}
    file_id = exports.store_model(db, exp_key, kept_name(job.get("tid")), blob, provenance)
    if jobs.update_one(guard(job, owner), {"$set": {"kept_model": str(file_id)}}).matched_count:
        prune_kept(db, jobs, exp_key, keep, running=(job.get("tid"), float(loss)))
        return True
    gridfs.GridFS(db, collection=exports.BUCKET).delete(file_id)
    return False


def prune_kept(db: Any, jobs: Any, exp_key: str, keep: int, running: tuple[Any, float]) -> None:
    """Delete the kept models of finished trials now outside the ``keep`` best (the
    running trial that just kept one counts with its ``loss``, its result not being
    stored yet). Other running trials are left alone: whoever finishes next prunes."""
    docs = jobs.find(
        {"exp_key": exp_key, "state": int(State.DONE), "kept_model": {"$ne": None}},
        projection=["tid", "kept_model", "result", "state"],
    )
    held = [d for d in docs if d.get("kept_model") and d.get("tid") != running[0]]
    ranked = [(_loss(d), d.get("tid"), d) for d in held]  # nx-27017: $ne null keeps missing
    ranked.append((running[1], running[0], None))
    ranked.sort(key=lambda r: (r[0], r[1]))
    fs = gridfs.GridFS(db, collection=exports.BUCKET)
    for _, tid, doc in ranked[keep:]:
        if doc is None:
            continue
        gone = jobs.update_one(
            {"_id": doc["_id"], "kept_model": doc["kept_model"]}, {"$set": {"kept_model": None}}
        )
        if gone.matched_count:
            for f in fs.find({"filename": exports.model_filename(exp_key, kept_name(tid))}):
                fs.delete(f._id)


def _loss(doc: dict) -> float:
    result = doc.get("result")  # nx-27017 returns a projected dotted field flat
    loss = result.get("loss") if isinstance(result, dict) else doc.get("result.loss")
    return float(loss) if isinstance(loss, int | float) else float("inf")
