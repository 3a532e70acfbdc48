"""A discrete-event simulation of N workers in virtual time, like Syne Tune's simulator
backend: a trial's epochs take virtual time, nothing sleeps, so a 64-worker study of
hundreds of trials takes seconds of CPU. Each searcher answers three calls (start a trial,
judge an epoch, finish it); :mod:`bench.search.searchers` has Strix's (its real suggestion
and pruning code) and the peers'.

Every trial's epoch takes ``speed`` virtual time units, drawn per trial (log-normal, spread
0.3) from the seed and the trial's index alone, so every searcher sees the same workers.
Regret at time t is the full-budget regret of the incumbent: among the trials that ran
their whole budget by t, the one with the lowest reported loss.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bench.search.problems import Problem


class Searcher(Protocol):
    def start(self, tid: int) -> tuple[tuple[float, ...], int]:
        """A new trial: its configuration and how many epochs it may run."""

    def epoch(self, tid: int, epoch: int, value: float) -> bool:
        """The trial's value after ``epoch``; True to stop it now (pruned)."""

    def finish(self, tid: int, loss: float, pruned: bool, epochs: int) -> None:
        """The trial ended: its reported loss (its best value), pruned or not."""


@dataclass
class Trace:
    """One simulated study: how the incumbent's regret fell, and what it cost."""

    times: list[float] = field(default_factory=list)
    regrets: list[float] = field(default_factory=list)
    trials: int = 0
    epochs: int = 0
    complete: int = 0
    pruned: int = 0

    def regret_at(self, t: float) -> float:
        """The regret at virtual time ``t`` (inf before any trial ran its whole budget)."""
        best = math.inf
        for when, regret in zip(self.times, self.regrets, strict=True):
            if when > t:
                break
            best = regret
        return best


@dataclass
class _Running:
    x: tuple[float, ...]
    budget: int
    speed: float
    best: float = math.inf


def speed(seed: int, tid: int) -> float:
    return float(np.random.default_rng([seed, tid, 7]).lognormal(0.0, 0.3))


def simulate(
    searcher: Searcher, problem: Problem, workers: int, horizon: float, seed: int
) -> Trace:
    """Run ``workers`` workers until virtual time ``horizon``; an idle worker starts a new
    trial at once (trials still running at the horizon are cut)."""
    trace, running, events = Trace(), {}, []
    incumbent = math.inf

    def launch(now: float) -> None:
        tid = trace.trials
        trace.trials += 1
        x, budget = searcher.start(tid)
        running[tid] = _Running(x, budget, speed(seed, tid))
        heapq.heappush(events, (now + running[tid].speed, tid, 1))

    for _ in range(workers):
        launch(0.0)
    while events:
        now, tid, epoch = heapq.heappop(events)
        if now > horizon:
            break
        trial = running[tid]
        trace.epochs += 1
        value = problem.curve(trial.x, epoch)
        trial.best = min(trial.best, value)
        stop = searcher.epoch(tid, epoch, value)
        if not stop and epoch < min(trial.budget, problem.max_epochs):
            heapq.heappush(events, (now + trial.speed, tid, epoch + 1))
            continue
        full = epoch >= problem.max_epochs
        searcher.finish(tid, trial.best, pruned=not full, epochs=epoch)
        trace.complete += full
        trace.pruned += stop and not full
        if full and trial.best < incumbent:
            incumbent = trial.best
            trace.times.append(now)
            trace.regrets.append(problem.regret(trial.x))
        del running[tid]
        launch(now)
    return trace
