"""The worker's side of pruning: feed :func:`shared.training.pruning.decide` from MongoDB.

At each epoch the rule judges, the worker reads the values the study's other trials
recorded there (one indexed query), decides, then records its own value for the trials
that come after. Workers never wait for each other: a trial that arrives first at a rung
is compared with nothing and continues, as in asynchronous successive halving.

A store outage never fails a trial over pruning: the trial then trains on, unjudged.
"""

from __future__ import annotations

import logging

from shared.errors import StoreError
from shared.store import Store
from shared.training.pruning import Decision, PrunerConfig, decide

log = logging.getLogger(__name__)


class SharedPruner:
    """Judges one trial (``tid`` of ``exp_key``) against the rung records in the store."""

    def __init__(self, store: Store, cfg: PrunerConfig, job: dict, owner: str):
        self.store, self.cfg, self.job, self.owner = store, cfg, job, owner
        self.exp_key, self.tid = str(job.get("exp_key")), int(job.get("tid", -1))

    def __call__(self, epoch: int, value: float) -> Decision | None:
        if not self.cfg.judges_at(epoch):
            return None
        try:
            others = self.store.rung_values(self.exp_key, epoch, but=self.tid)
            decision = decide(self.cfg, epoch, value, others)
            if not self.store.record_rung(self.job, self.owner, epoch, value):
                # the run is no longer ours: its value is not recorded, and the heartbeat
                # stops it; judging it further would be moot
                log.warning("trial %s: not ours any more; rung %d not recorded", self.tid, epoch)
                return None
        except StoreError as e:
            log.warning("trial %s: no pruning decision at epoch %d (%s)", self.tid, epoch, e)
            return None
        if decision is not None:
            log.info("trial %s: %s", self.tid, decision.reason())
        return decision


def for_job(store: Store, job: dict, pruner: dict | None, owner: str) -> SharedPruner | None:
    """The judge of one job, or None when its study does not prune."""
    cfg = PrunerConfig.from_dict(pruner)
    if cfg.kind == "none":
        return None
    return SharedPruner(store, cfg, job, owner)
