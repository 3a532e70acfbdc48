"""Posting a study's trials through hyperopt, and watching it until every trial is done.

hyperopt's ``FMinIter`` runs in a background thread exactly as ``fmin`` would run it
(TPE, the queue, the pickled Domain), only with a short poll interval and a queue long
enough to keep every worker busy. The main thread shows progress, runs the reaper, and
applies the study's budgets (:mod:`coordinator.study.limits`): once one is spent, the poster
stops, the queued trials no worker started are withdrawn, and the running ones finish.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coordinator.study.limits import Stopper, StudyLimits
from coordinator.study.progress import Progress, best_text
from coordinator.study.summary import common_reasons, failed_trials, reasons_text
from shared.errors import ConfigError, StoreError, StoreUnavailable, StudyBusy
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
    limits: StudyLimits = field(default_factory=StudyLimits)


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
        self.stop_posting = threading.Event()  # a budget is spent: post nothing more

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
            early_stop_fn=lambda _trials, *_: (self.stop_posting.is_set(), []),
        )
        it.exhaust()  # once stopped, it waits until no trial is queued or running


def run(
    study: Study,
    *,
    grace: float,
    max_attempts: int,
    on_tick: Callable[[], Any] | None = None,
    progress: bool = True,
    interval: float = 1.0,
) -> str | None:
    """Post the study and block until all its trials ended, reaping lost ones meanwhile;
    returns why posting stopped early (a budget), or None.

    Only one coordinator runs a study at a time: this one holds the study's lease in the
    store (its own ``grace``, server time) and renews it every tick; a second one on the
    same exp_key is refused with :class:`StudyBusy`, naming the holder. Reaping judges each
    trial by its holder's lease, so neither ``grace`` nor this host's clock decides it.
    """
    me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    _hold(study, me, grace)
    poster = Poster(study)
    poster.start()
    watch = _Watch(study, progress)
    try:
        while poster.is_alive():
            poster.join(interval)
            try:
                _hold(study, me, grace)
                watch.tick(max_attempts, poster)
            except StoreUnavailable as e:  # keep watching: workers and poster ride it out too
                log.warning("store unavailable (%s); retrying", e)
                continue
            if on_tick:
                on_tick()
    finally:
        poster.halt.set()
        watch.view.close()
        _let_go(study, me)
    if poster.error is not None:
        raise poster.error
    return watch.stopped


def _hold(study: Study, me: str, grace: float) -> None:
    """Take or renew this coordinator's lease on the study; StudyBusy if another holds it."""
    holder = study.store.claim_study(study.exp_key, me, grace)
    if holder is not None:
        raise StudyBusy(
            f"study {study.exp_key!r} is being run by another coordinator, {holder}; stop "
            "that one first (or wait for it to end), or pick another --exp-key"
        )


def _let_go(study: Study, me: str) -> None:
    try:
        study.store.release_study(study.exp_key, me)
    except StoreError as e:
        log.warning("could not release the study's lease (%s); it expires by itself", e)


class _Watch:
    """What the main thread does every tick: reap, show progress, apply the budgets."""

    def __init__(self, study: Study, progress: bool) -> None:
        self.study = study
        self.view = Progress(study.exp_key, study.max_evals, progress)
        self.idle = IdleWarning()
        self.stopper = Stopper(study.limits, lambda: study.store.finished_losses(study.exp_key))
        self.stopped: str | None = None

    def tick(self, max_attempts: int, poster: Poster) -> None:
        store, key = self.study.store, self.study.exp_key
        store.reap(max_attempts)
        tally = store.tally(key)
        best = best_text(next(iter(store.best(key)), None))
        pruned = store.count_pruned(key)
        self.view.update(tally, best, _reasons(store, key, tally), pruned=pruned)
        self.idle.check(tally)
        if self.stopped is None:
            self.stopped = self.stopper.reason(tally["ok"] + tally["failed"])
            if self.stopped is not None:
                poster.stop_posting.set()
                log.warning(
                    "%s: posting no more trials; %d running trial(s) finish "
                    "(Ctrl-C requeues them and exits)",
                    self.stopped,
                    tally["running"],
                )
        if self.stopped is not None:  # the poster may have posted once more meanwhile
            store.withdraw_queued(key)


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


def closing_text(store: Store, exp_key: str, stopped: str | None = None) -> str:
    """The study's last word: best, every outcome apart, pruned trials among the ok ones,
    why posting stopped early, and why trials failed."""
    tally = store.tally(exp_key)
    best = best_text(next(iter(store.best(exp_key)), None))
    pruned = store.count_pruned(exp_key)
    counts = {k: f"{tally[k]} {k}" for k in ("ok", "failed", "error", "running", "queued")}
    if pruned:
        counts["ok"] += f" ({pruned} pruned)"
    how = f"stopped early ({stopped})" if stopped else "finished"
    line = f"study {exp_key} {how}: best {best}; " + ", ".join(counts.values())
    reasons = _reasons(store, exp_key, tally, n=3)
    if reasons:
        line += f"\nfailed trials: {reasons}\n(all of them: strix results --exp-key {exp_key} "
        line += "--state failed)"
    return line
