"""The worker's :class:`~shared.training.checkpoint.Vault`: one trial's checkpoints in the
store (GridFS, or ``--checkpoint-dir``), written only while this worker owns the trial.

A store outage never fails a trial over a checkpoint: the save is reported lost and the
trial trains on; the previous checkpoint stays current.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from shared.errors import StoreError
from shared.store import Store
from worker.config import WorkerConfig

log = logging.getLogger(__name__)


class StoreVault:
    def __init__(self, store: Store, job: dict, owner: str, cfg: WorkerConfig) -> None:
        self.store, self.job, self.owner = store, job, owner
        self.root, self.keep_best = cfg.checkpoint_dir, cfg.keep_best
        self.interval_s = cfg.checkpoint_every * 60.0
        # the epochs the previous attempt reported: what a resume from an older checkpoint redoes
        self.reached = float((job.get("progress") or {}).get("epoch") or 0)
        self.used = bool(job.get("checkpoint"))

    def load(self) -> bytes | None:
        try:
            return self.store.load_checkpoint(self.job, self.root)
        except StoreError as e:
            log.warning("trial %s: checkpoint unreadable (%s); it starts over", self._tid, e)
            return None

    def save(self, blob: bytes, epoch: int, batch: int) -> bool:
        self.used = True
        info = {"epoch": int(epoch), "batch": int(batch)}
        try:
            ok = self.store.save_checkpoint(self.job, self.owner, blob, info, self.root)
        except (StoreError, OSError) as e:
            log.warning("trial %s: checkpoint not saved (%s)", self._tid, e)
            return False
        if not ok:
            log.warning("trial %s: checkpoint refused, the trial is no longer ours", self._tid)
        return ok

    def keep(self, result: dict[str, Any], model: Any) -> None:
        """Keep the final model when the trial ranks among the ``--keep-best`` ones."""
        loss = result.get("loss")
        if self.keep_best <= 0 or not isinstance(loss, int | float):
            return
        try:
            if not self.store.would_keep(self.job, float(loss), self.keep_best):
                return
            with tempfile.TemporaryDirectory(prefix="strix-keep-") as tmp:
                path = Path(tmp) / "model.keras"
                model.save(path)
                blob = path.read_bytes()
            self.store.keep_model(self.job, self.owner, blob, float(loss), self.keep_best)
        except (StoreError, OSError) as e:
            log.warning("trial %s: final model not kept (%s)", self._tid, e)

    @property
    def _tid(self) -> Any:
        return self.job.get("tid")


def for_job(
    store: Store, job: dict, owner: str, cfg: WorkerConfig, model: str
) -> StoreVault | None:
    """Where a trial checkpoints; None with ``--checkpoint-every 0`` (and for toy jobs)."""
    if cfg.checkpoint_every <= 0 or model == "toy":
        return None
    return StoreVault(store, job, owner, cfg)


def left_any(cfg: WorkerConfig, job: dict, vault: StoreVault | None) -> bool:
    """Whether a finished trial may have left checkpoints to delete (an ``--isolate``
    child's vault is out of the parent's sight)."""
    if job.get("checkpoint") or (vault is not None and vault.used):
        return True
    return cfg.isolate and cfg.checkpoint_every > 0
