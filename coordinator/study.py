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

from coordinator.progress import Progress, best_text
from coordinator.summary import common_reasons, failed_trials, reasons_text
from shared.errors import ConfigError, StoreUnavailable
from shared.store import State, Store

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


def trial_seed(seed: int, index: int) -> int:
    """The suggestion seed of the study's ``index``-th trial: a pure function of both, so
    a resumed or extended study draws what an uninterrupted one would have drawn."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] % (2**31 - 1))


def seeded(suggest: Callable, seed: int | None) -> Callable:
    """``suggest`` with one seed per trial instead of one per batch.

    hyperopt seeds each *batch* of suggestions from a generator made afresh at every
    launch, so a resumed study replays the first seeds and repeats earlier trials, and the
    batch sizes (which depend on timing) change what each trial gets. Here the k-th trial
    of the study always gets ``trial_seed(seed, k)``.
    """
    if seed is None:
        return suggest

    def per_trial(new_ids: list[int], domain: Any, trials: Any, _batch_seed: int) -> list:
        posted = trials.count_by_state_unsynced(list(State))
        docs: list = []
        for k, tid in enumerate(new_ids):
            docs += suggest([tid], domain, trials, trial_seed(seed, posted + k))
        return docs

    return per_trial


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
            seeded(_algo(s.algo), s.seed),
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
    view = Progress(study.exp_key, study.max_evals, progress)
    idle = IdleWarning()
    try:
        while poster.is_alive():
            poster.join(interval)
            try:
                study.store.reap(grace, max_attempts)
                tally = study.store.tally(study.exp_key)
                best = best_text(next(iter(study.store.best(study.exp_key)), None))
                view.update(tally, best, _reasons(study.store, study.exp_key, tally))
            except StoreUnavailable as e:  # keep watching: workers and poster ride it out too
                log.warning("store unavailable (%s); retrying", e)
                continue
            idle.check(tally)
            if on_tick:
                on_tick()
    finally:
        poster.halt.set()
        view.close()
    if poster.error is not None:
        raise poster.error


class IdleWarning:
    """Says, at most once a minute, that trials wait and no worker runs any."""

    def __init__(self, after: float = 60.0) -> None:
        self.after = after
        self.idle_since = self.last_said = time.monotonic()

    def check(self, tally: dict[str, int]) -> None:
        now = time.monotonic()
        if tally["running"] or not tally["queued"]:
            self.idle_since = now
            return
        if now - self.idle_since > self.after and now - self.last_said >= self.after:
            self.last_said = now
            log.warning(
                "%d trial(s) queued but no worker has run one for %.0fs: start workers with "
                "`strix-worker --mongo URI` (or pass --local-workers N)",
                tally["queued"],
                now - self.idle_since,
            )


def _reasons(store: Store, exp_key: str, tally: dict[str, int], n: int = 1) -> str:
    """The most common failure reasons, read only when something failed."""
    if not tally["failed"] + tally["error"]:
        return ""
    return reasons_text(common_reasons(failed_trials(store, exp_key), n, width=70))


def closing_text(store: Store, exp_key: str) -> str:
    """The study's last word: best, every outcome apart, and why trials failed."""
    tally = store.tally(exp_key)
    best = best_text(next(iter(store.best(exp_key)), None))
    line = f"study {exp_key} finished: best {best}; " + ", ".join(
        f"{tally[k]} {k}" for k in ("ok", "failed", "error", "running", "queued")
    )
    reasons = _reasons(store, exp_key, tally, n=3)
    if reasons:
        line += f"\nfailed trials: {reasons}\n(all of them: strix results --exp-key {exp_key} "
        line += "--state failed)"
    return line
