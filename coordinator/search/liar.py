"""The constant liar: what a suggestion engine is told about trials that have no loss yet.

With N workers, N suggestions are made while earlier ones still run. An engine that does
not know about them crowds the same region (NNI's study of parallel TPE; Optuna 5 made a
constant liar its default). The liar gives every queued or running trial a made-up loss, a
pure function of the finished losses: ``worst`` (their maximum: "that region is taken"),
``mean``, ``best`` (their minimum: optimistic), or ``none`` (the trial is left out).

**What hyperopt already does.** Strix's ``MongoTrials.refresh`` is hyperopt's: every job of
the study in a valid state (queued, running, done; not error) reaches ``trials.trials``, and
``tpe.suggest``/``anneal.suggest`` give a job without a loss (``result: {"status": "new"}``)
the loss ``inf``. So hyperopt's TPE does see running trials, as worse than the worst: a
liar above ``worst``. (Failed trials get ``inf`` too; they are left as they are here.)
:func:`lied` replaces that ``inf`` by the chosen lie, or hides the trials for ``none``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from shared.config import defaults

LIARS = defaults.LIARS
PENDING_STATES = (0, 1)  # hyperopt's JOB_STATE_NEW (queued), JOB_STATE_RUNNING (reserved)


def lie(losses: Iterable[float], liar: str) -> float | None:
    """The loss a pending trial is given: a pure function of the finished ``losses``.

    None when there is nothing to lie with (``none``, or no finished loss yet): the pending
    trials are then left out of the model."""
    if liar not in LIARS:
        raise ValueError(f"liar {liar!r} is unknown; use one of {', '.join(LIARS)}")
    finite = [float(x) for x in losses if math.isfinite(x)]
    if liar == "none" or not finite:
        return None
    if liar == "worst":
        return max(finite)
    if liar == "best":
        return min(finite)
    return sum(finite) / len(finite)


def is_pending(doc: dict) -> bool:
    return doc.get("state") in PENDING_STATES


def finished_loss(doc: dict) -> float | None:
    """A done, ok trial's loss (pruned trials included: their loss is what TPE is fed)."""
    result = doc.get("result") or {}
    loss = result.get("loss")
    if doc.get("state") != 2 or result.get("status") != "ok" or loss is None:
        return None
    loss = float(loss)
    return loss if math.isfinite(loss) else None


def finished_losses(docs: Iterable[dict]) -> list[float]:
    return [x for x in map(finished_loss, docs) if x is not None]


class LiedTrials:
    """A view of hyperopt trials in which pending trials carry the lie as their loss.

    Everything but ``trials`` (and ``len``) is the real trials object's, so the documents
    an engine makes with ``new_trial_docs`` are stamped and inserted exactly as before."""

    def __init__(self, inner: Any, docs: Sequence[dict]) -> None:
        self._inner = inner
        self._docs = list(docs)

    @property
    def trials(self) -> list[dict]:
        return self._docs

    def __len__(self) -> int:
        return len(self._docs)

    def __iter__(self) -> Any:
        return iter(self._docs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def lied(trials: Any, liar: str) -> LiedTrials:
    """``trials`` as a hyperopt engine should see them under ``liar``."""
    docs = list(trials.trials)
    value = lie(finished_losses(docs), liar)
    shown = []
    for doc in docs:
        if not is_pending(doc):
            shown.append(doc)
        elif value is not None:
            shown.append({**doc, "result": {**(doc.get("result") or {}), "loss": value}})
    return LiedTrials(trials, shown)
