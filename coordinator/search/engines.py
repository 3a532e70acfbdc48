"""Which suggestion engine ``--algo`` names, with which liar: one hyperopt ``algo`` function.

``tpe``, ``rand`` and ``anneal`` are hyperopt's own; ``optuna-tpe`` (multivariate TPE) and
``optuna-gp`` are Optuna's samplers behind the same contract
(:mod:`coordinator.search.optuna_engine`). Every engine gets the liar
(:mod:`coordinator.search.liar`); random search ignores it (it looks at no trial).
``liar=None`` hands hyperopt's engines the trials as they are (pending ones at ``inf``, as
before the liar existed): the simulator compares against it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coordinator.search import liar as liars
from shared.config import defaults
from shared.errors import ConfigError

ALGOS = defaults.ALGOS
LIARS = liars.LIARS


def _hyperopt(name: str) -> Callable:
    from hyperopt import anneal, rand, tpe

    return {"tpe": tpe.suggest, "rand": rand.suggest, "anneal": anneal.suggest}[name]


def check(algo: str, liar: str | None = "worst") -> None:
    """One ConfigError line for an unknown engine or liar, or a missing dependency."""
    if algo not in ALGOS:
        raise ConfigError(f"--algo {algo!r} is unknown; use one of {', '.join(ALGOS)}")
    if liar is not None and liar not in LIARS:
        raise ConfigError(f"--liar {liar!r} is unknown; use one of {', '.join(LIARS)}")
    if algo.startswith("optuna-"):
        from coordinator.search import optuna_engine

        optuna_engine.check(algo.removeprefix("optuna-"))


def suggester(algo: str, liar: str | None) -> Callable:
    """The ``suggest(new_ids, domain, trials, seed)`` function ``fmin`` calls."""
    check(algo, liar)
    if algo.startswith("optuna-"):
        from coordinator.search import optuna_engine

        return optuna_engine.engine(algo.removeprefix("optuna-"), liar or "worst")
    base = _hyperopt(algo)
    if liar is None or algo == "rand":
        return base

    def with_liar(new_ids: list[int], domain: Any, trials: Any, seed: int) -> list:
        return base(new_ids, domain, liars.lied(trials, liar), seed)

    with_liar.__name__ = f"{algo}_{liar}_suggest"
    return with_liar
