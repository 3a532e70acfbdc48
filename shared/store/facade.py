"""``Store``: the one connection object the worker and the coordinator use.

It needs pymongo only: hyperopt's classes (``handle``, ``trials``) are imported on first
use, so commands that only read a study start without hyperopt, scipy or TensorFlow.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.config import defaults
from shared.errors import StoreAuthError
from shared.store import checkpoints, leases, queue, reads, rungs, studylease
from shared.store.client import MongoTarget, guard_methods, make_client, parse_target
from shared.store.clock import ServerClock
from shared.store.codec import encode, with_codec
from shared.store.reads import State

log = logging.getLogger(__name__)
GRACE_S = defaults.GRACE_FACTOR * defaults.HEARTBEAT_S  # a holder that does not say its own


@guard_methods
class Store:
    """One connection to one Strix database, with every operation Strix needs on it."""

    def __init__(self, url: str, db: str | None = None, *, timeout_ms: int | None = None):
        self.target: MongoTarget = parse_target(url, db)
        self.client = make_client(self.target, timeout_ms)
        self.db = with_codec(self.client[self.target.db])
        self.jobs = self.db[self.target.collection]
        self.gpus = self.db["gpus"]
        self.metrics = self.db["metrics"]
        self.rungs = self.db["rungs"]
        self.clock = ServerClock(self.client)  # every lease is server time
        self._handle: Any = None

    def __repr__(self) -> str:
        return f"Store({self.target.redacted})"

    @property
    def handle(self) -> Any:
        """hyperopt's ``MongoJobs`` on this connection (imports hyperopt on first use)."""
        if self._handle is None:
            from shared.store.hyperopt.mongojobs import MongoJobs

            self._handle = MongoJobs(
                self.db, self.target.collection, None, self.client, target=self.target
            )
        return self._handle

    def ping(self) -> None:
        """Fail fast, with a clear one-line reason, when the server is down or refuses us."""
        self.client.admin.command("ping")
        self.jobs.find_one({}, projection=["_id"])

    def create_indexes(self) -> None:
        self.handle.create_indexes()
        self.metrics.create_index([("exp_key", 1), ("tid", 1), ("epoch", 1)])
        self.gpus.create_index("host")
        rungs.create_indexes(self.rungs)

    def close(self) -> None:
        self.client.close()

    def trials(
        self,
        exp_key: str | None,
        *,
        resource: str = "light",
        meta: dict | None = None,
        refresh: bool = True,
    ) -> Any:
        """hyperopt's ``MongoTrials`` for one study, stamping Strix's resource and meta."""
        from shared.store.hyperopt.trials import MongoTrials

        return MongoTrials(self.handle, exp_key, refresh=refresh, resource=resource, meta=meta)

    # --- the job protocol (see shared.store.queue) ------------------------------------
    def peek_resource(self, exp_key: str | None, resources: list[str]) -> str | None:
        return queue.peek_resource(self.jobs, exp_key, resources)

    def reserve(
        self, owner: str, exp_key: str | None, resources: list[str], grace: float = GRACE_S
    ) -> dict | None:
        """Take the oldest fitting job; its lease lasts ``grace`` (the holder's own) seconds."""
        return queue.reserve(self.jobs, owner, exp_key, resources, self.clock.now(), grace)

    def heartbeat(
        self, job: dict, owner: str, grace: float = GRACE_S, extra: dict | None = None
    ) -> bool:
        """Extend this run's lease by the holder's ``grace``; False: no longer ours."""
        return queue.heartbeat(self.jobs, job, owner, self.clock.now(), grace, extra)

    def set_fields(self, job: dict, owner: str, fields: dict) -> bool:
        return queue.set_fields(self.jobs, job, owner, fields)

    def finish(self, job: dict, owner: str, result: dict, error: str | None = None) -> bool:
        return queue.finish(self.jobs, job, owner, result, error, self.clock.now())

    def requeue(self, job: dict, owner: str, reason: str) -> bool:
        return queue.requeue(self.jobs, job, owner, reason)

    def owner(self, job: dict) -> str | None:
        """Who holds the job now (None when it is queued or gone)."""
        doc = self.jobs.find_one({"_id": job["_id"]}, projection=["owner"])
        return None if doc is None else doc.get("owner")

    def ctrl(self, job: dict) -> Any:
        """hyperopt's ``Ctrl`` for a running job (trial attachments, checkpoints)."""
        from hyperopt.mongoexp import MongoCtrl

        trials = self.trials(job.get("exp_key"), refresh=False)
        return MongoCtrl(trials=trials, current_trial=job, read_only=False)

    def reap(self, max_attempts: int, exp_key: str | None = None) -> list[int]:
        """Requeue the jobs whose holder's lease expired by the server's time, read now."""
        return queue.reap(self.jobs, self.clock.read(), max_attempts, exp_key)

    def server_time(self) -> float:
        """The server's time now (epoch seconds), the clock every lease is judged by."""
        return self.clock.read()

    def counts(self, exp_key: str | None = None) -> dict[str, int]:
        return {s.name.lower(): n for s, n in reads.counts(self.jobs, exp_key).items()}

    def tally(self, exp_key: str | None = None) -> dict[str, int]:
        return reads.tally(self.jobs, exp_key)

    # --- the typed read API (see shared.store.reads) ------------------------------------
    def best(self, exp_key: str, n: int = 1, fields: list[str] | None = None) -> list[dict]:
        return reads.best(self.jobs, exp_key, n, fields)

    def trials_in(
        self,
        exp_key: str | None,
        states: list[State] | None = None,
        fields: list[str] | None = None,
        **narrow: Any,
    ) -> list[dict]:
        """Trial documents of a study (see :func:`shared.store.reads.trials`)."""
        return reads.trials(self.jobs, exp_key, states, fields, **narrow)

    def count(self, exp_key: str | None, **narrow: Any) -> int:
        return reads.count(self.jobs, exp_key, **narrow)

    def history(self, exp_key: str, tid: int) -> list[dict]:
        return reads.history(self.metrics, exp_key, tid)

    def studies(self) -> list[str]:
        return reads.studies(self.jobs)

    def attachment(self, name: str, exp_key: str | None) -> bytes:
        from shared.store.hyperopt.trials import Attachments

        return Attachments(self.handle, exp_key)[name]

    # --- trial checkpoints and kept models (see shared.store.checkpoints) --------------
    def save_checkpoint(
        self, job: dict, owner: str, blob: bytes, info: dict, root: str | None = None
    ) -> bool:
        return checkpoints.save(self.db, self.jobs, job, owner, blob, info, root)

    def load_checkpoint(self, job: dict, root: str | None = None) -> bytes | None:
        return checkpoints.load(self.db, job, root)

    def clear_checkpoint(self, job: dict, owner: str, root: str | None = None) -> bool:
        return checkpoints.clear(self.db, self.jobs, job, owner, root)

    def would_keep(self, job: dict, loss: float, keep: int) -> bool:
        return checkpoints.qualifies(self.jobs, job, loss, keep)

    def keep_model(self, job: dict, owner: str, blob: bytes, loss: float, keep: int) -> bool:
        return checkpoints.keep_model(self.db, self.jobs, job, owner, blob, loss, keep)

    def kept_model(self, exp_key: str, tid: int) -> bytes:
        """The final model a ``--keep-best`` trial kept (``.keras`` bytes); StoreError if none."""
        from shared.store import exports

        return exports.fetch_model(self.db, exp_key, checkpoints.kept_name(tid))[0]

    # --- GPU slots and leases (see shared.store.leases) --------------------------------
    def register_gpus(self, host: str, indices: list[int], capacity: int) -> None:
        leases.ensure_gpus(self.gpus, host, indices, capacity)

    def claim_slot(
        self, host: str, indices: list[int], worker: str, ttl: float, forced: int | None = None
    ) -> int:
        now = self.clock.now()
        return leases.claim_slot(self.gpus, host, indices, worker, ttl, now, forced)

    def acquire(
        self, host: str, index: int, holder: str, units: int, capacity: int, ttl: float
    ) -> bool:
        gid, now = leases.gpu_id(host, index), self.clock.now()
        return leases.acquire(self.gpus, gid, holder, units, capacity, ttl, now)

    def renew(self, host: str, index: int, worker: str, holder: str | None, ttl: float) -> None:
        leases.renew(self.gpus, leases.gpu_id(host, index), worker, holder, ttl, self.clock.now())

    def release(self, host: str, index: int, holder: str) -> None:
        leases.release(self.gpus, leases.gpu_id(host, index), holder, self.clock.now())

    def gpu_usage(self, host: str, index: int) -> int:
        doc = self.gpus.find_one({"_id": leases.gpu_id(host, index)})
        return 0 if doc is None else leases.used_units(doc, self.clock.now())

    # --- one coordinator per study (see shared.store.studylease) ------------------------
    def claim_study(self, exp_key: str, holder: str, grace: float) -> str | None:
        """Hold the study's coordinator lease; the other live holder's id when refused."""
        return studylease.claim(self.db["coordinators"], exp_key, holder, grace, self.clock.read())

    def release_study(self, exp_key: str, holder: str) -> None:
        studylease.release(self.db["coordinators"], exp_key, holder)

    # --- live metrics and queries --------------------------------------------------------
    def add_metric(self, row: dict) -> None:
        """One epoch's row; an epoch a resumed trial trains again replaces its row."""
        key = {k: row.get(k) for k in ("exp_key", "tid", "epoch")}
        self.metrics.replace_one(key, encode(row), upsert=True)

    def record_epoch(self, job: dict, owner: str, epoch: int, row: dict) -> bool:
        """One finished epoch of a running trial: its progress on the job, then its metrics
        row, both only while the run is ours (False: nothing written, the run is lost)."""
        now = self.clock.now()
        progress = {"progress": {"epoch": epoch, "updated": now, **row}}
        if not queue.set_fields(self.jobs, job, owner, progress):
            return False
        base = {"exp_key": job.get("exp_key"), "tid": job.get("tid"), "owner": owner}
        self.add_metric({**base, "attempt": job.get("attempt"), "epoch": epoch, "time": now, **row})
        return True

    # --- pruning and study budgets (see shared.store.rungs) -----------------------------
    def rung_values(self, exp_key: str, epoch: int, but: int | None = None) -> list[float]:
        return rungs.values(self.rungs, exp_key, epoch, but)

    def record_rung(self, job: dict, owner: str, epoch: int, value: float) -> bool:
        """This run's value at ``epoch``; False when the run is no longer ours."""
        return rungs.record(self.rungs, self.jobs, job, owner, epoch, value)

    def count_pruned(self, exp_key: str | None) -> int:
        return rungs.count_pruned(self.jobs, exp_key)

    def finished_losses(self, exp_key: str) -> list[float | None]:
        return rungs.finished_losses(self.jobs, exp_key)

    def withdraw_queued(self, exp_key: str) -> int:
        return rungs.withdraw_queued(self.jobs, exp_key)


def connect(
    url: str, db: str | None = None, *, timeout_ms: int | None = None, check: bool = True
) -> Store:
    """Open a store and, unless ``check=False``, prove the server answers and accepts us."""
    store = Store(url, db, timeout_ms=timeout_ms)
    if check:
        try:
            store.ping()
        except (KeyError, TypeError):
            # pymongo's SCRAM handshake breaks on servers without auth (nx-27017)
            raise StoreAuthError(
                f"MongoDB at {store.target.redacted} does not support authentication (the "
                "embedded nx-27017 has none); remove user:password from the URI for it"
            ) from None
    return store
