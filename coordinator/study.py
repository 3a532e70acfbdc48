"""Posting a study's trials through hyperopt, and watching it until every trial is done.

hyperopt's ``FMinIter`` runs in a background thread exactly as ``fmin`` would run it
(TPE, the queue, the pickled Domain), only with a short poll interval and a queue long
enough to keep every worker busy. The main thread shows progress and runs the reaper.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from shared.errors import ConfigError, StoreUnavailable
from shared.store import JOB_STATE_DONE, Store

log = logging.getLogger(__name__)


@dataclass
class Study:
    store: Store
    exp_key: str
    fn: Callable[[dict], dict]
    space: dict
    max_evals: int
    algo: str = "tpe"
    max_queue_len: int = 4
    resource: str = "light"
    meta: dict = field(default_factory=dict)
    seed: int | None = None
    poll_interval: float = 0.2


def _algo(name: str) -> Callable:
    from hyperopt import rand, tpe

    algos = {"tpe": tpe.suggest, "rand": rand.suggest}
    if name not in algos:
        raise ConfigError(f"--algo {name!r} is unknown; use one of {sorted(algos)}")
    return algos[name]


class Poster(threading.Thread):
    """Runs hyperopt's ``FMinIter`` against the store; keeps any exception for the caller."""

    def __init__(self, study: Study):
        super().__init__(name="strix-fmin", daemon=True)
        self.study = study
        self.error: BaseException | None = None
        self.halt = threading.Event()  # the coordinator is leaving: stop retrying

    def run(self) -> None:
        delay = 1.0
        while True:
            try:
                self._exhaust()
                return
            except StoreUnavailable as e:  # MongoDB restarting: resume where hyperopt left off
                if self.halt.is_set():
                    return
                log.warning("posting paused, store unavailable (%s); retry in %.0fs", e, delay)
                self.halt.wait(delay)
                delay = min(delay * 2, 15.0)
            except BaseException as e:
                self.error = e
                return

    def _exhaust(self) -> None:
        from hyperopt import base
        from hyperopt.fmin import FMinIter

        s = self.study
        trials = s.store.trials(s.exp_key, resource=s.resource, meta=s.meta)
        it = FMinIter(
            _algo(s.algo),
            base.Domain(s.fn, s.space),
            trials,
            rstate=np.random.default_rng(s.seed),
            max_queue_len=s.max_queue_len,
            poll_interval_secs=s.poll_interval,
            max_evals=s.max_evals,
            show_progressbar=False,
            verbose=False,
        )
        it.exhaust()


def best_loss(store: Store, exp_key: str) -> float | None:
    docs = store.find_jobs(
        {"exp_key": exp_key, "state": JOB_STATE_DONE, "result.status": "ok"},
        projection=["result"],  # nx-27017 ignores dotted projections
    )
    losses = [d["result"]["loss"] for d in docs if d["result"].get("loss") is not None]
    return min(losses) if losses else None


def failed_count(store: Store, exp_key: str) -> int:
    query = {"exp_key": exp_key, "state": JOB_STATE_DONE, "result.status": "fail"}
    return len(store.find_jobs(query, projection=["_id"]))


def run(
    study: Study,
    *,
    grace: float,
    max_attempts: int,
    on_tick: Callable[[], Any] | None = None,
    progress: bool = True,
    interval: float = 1.0,
) -> None:
    """Post the study and block until all its trials ended, reaping lost ones meanwhile."""
    poster = Poster(study)
    poster.start()
    bar = tqdm(total=study.max_evals, desc=study.exp_key, unit="trial", disable=not progress)
    idle_since = time.monotonic()
    try:
        while poster.is_alive():
            poster.join(interval)
            try:
                study.store.reap(grace, max_attempts)
                counts = study.store.counts(study.exp_key)
            except StoreUnavailable as e:  # keep watching: workers and poster ride it out too
                log.warning("store unavailable (%s); retrying", e)
                continue
            if counts["running"]:
                idle_since = time.monotonic()
            _safe_update(bar, study, counts)
            _warn_if_idle(counts, idle_since)
            if on_tick:
                on_tick()
    finally:
        poster.halt.set()
        bar.close()
    if poster.error is not None:
        raise poster.error


def _safe_update(bar: tqdm, study: Study, counts: dict[str, int]) -> None:
    try:
        _update_bar(bar, study, counts)
    except StoreUnavailable as e:
        log.warning("store unavailable (%s); progress not updated", e)


def _update_bar(bar: tqdm, study: Study, counts: dict[str, int]) -> None:
    best = best_loss(study.store, study.exp_key)
    failed = failed_count(study.store, study.exp_key) + counts["error"]
    bar.n = min(counts["done"] + counts["error"], study.max_evals)
    bar.set_postfix(
        best="-" if best is None else f"{best:.4f}",
        running=counts["running"],
        queued=counts["new"],
        failed=failed,
        refresh=False,
    )
    bar.refresh()


def _warn_if_idle(counts: dict[str, int], idle_since: float, after: float = 60.0) -> None:
    if counts["new"] and not counts["running"] and time.monotonic() - idle_since > after:
        log.warning(
            "%d trial(s) queued but no worker has run one for %.0fs: start workers with "
            "`strix-worker --mongo URI` (or pass --local-workers N)",
            counts["new"],
            after,
        )
