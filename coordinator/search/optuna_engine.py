"""Optuna's samplers as hyperopt ``algo`` functions: ``suggest(new_ids, domain, trials, seed)``.

hyperopt's ``fmin``/``FMinIter`` takes any such function, so Optuna's multivariate TPE (or
its GP sampler) can sit behind Strix's MongoTrials, job documents and workers unchanged:
each call rebuilds an in-memory Optuna study from the trials hyperopt hands in (sorted by
tid, so the same trials and seed give the same suggestion: seeded and resumable), asks it
for one trial define-by-run, and writes the answer into hyperopt's ``misc.idxs/vals``.

Conditional spaces: ``expr_to_config`` gives each label the conditions under which it is
used (tuples of ``EQ(choice label, index)``); a label is sampled only when one of its
tuples holds for the choices already made, so a branch's parameters are asked for exactly
when hyperopt would evaluate them, and left empty (``vals[label] == []``) otherwise.

Pending trials (queued or running) reach the model as the liar says
(:mod:`coordinator.search.liar`): with ``worst`` and the TPE sampler they are RUNNING and
Optuna's own constant liar counts them among the bad trials; with ``mean``/``best`` (and
with any lie for the GP sampler, which has no liar of its own) they are COMPLETE with the
lie as value; with ``none`` they are left out.
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coordinator.optuna_bridge.mapping import Param, clean, distribution, space_params
from coordinator.search.liar import finished_loss, finished_losses, is_pending, lie
from shared.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "gp")
_UNBOUNDED = "has no bounds (hp.normal and friends); Optuna's samplers need a range"


@dataclass(frozen=True)
class Label:
    """One hyperopt label as Optuna samples it, and how its value is written back."""

    name: str
    dist: Any  # optuna BaseDistribution; a choice samples its index
    write: Callable[[Any], Any]  # Optuna's value -> the value hyperopt would store
    conditions: tuple[tuple[tuple[str, Any], ...], ...]  # any tuple of (label, index) holds


_SPACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def labels(domain: Any) -> list[Label]:
    """The domain's labels in an order where every condition's label comes first."""
    if domain not in _SPACES:
        _SPACES[domain] = _ordered(_labels(domain.expr))
    return _SPACES[domain]


def _labels(expr: Any) -> list[Label]:
    from hyperopt.pyll_utils import expr_to_config

    hps: dict[str, dict] = {}
    expr_to_config(expr, (True,), hps)
    params = space_params(expr)
    out = []
    for name, param in params.items():
        dist, write = _dist(param, hps[name]["node"].name)
        conds = tuple(
            tuple((c.name, c.val) for c in group if not isinstance(c, bool))
            for group in hps[name]["conditions"]
        )
        out.append(Label(name, dist, write, conds))
    return out


def _dist(param: Param, node: str) -> tuple[Any, Callable[[Any], Any]]:
    from optuna.distributions import CategoricalDistribution

    if param.kind == "categorical":
        return CategoricalDistribution(tuple(range(len(param.choices or ())))), int
    if param.low is None or param.high is None:
        raise ConfigError(
            f"--algo optuna-*: parameter {param.label!r} ({node}) {_UNBOUNDED}; use "
            "hp.uniform/hp.loguniform/hp.quniform with bounds, or --algo tpe"
        )
    dist = distribution(param, [])
    if param.kind == "int":
        return dist, (int if node in ("randint", "uniformint") else float)
    step = param.step if param.step and not getattr(dist, "step", None) else None
    return dist, (lambda v: clean(round(v / step) * step)) if step else float


def _ordered(found: list[Label]) -> list[Label]:
    done: set[str] = set()
    out: list[Label] = []
    while len(out) < len(found):
        ready = [
            lab
            for lab in found
            if lab.name not in done and all(n in done for group in lab.conditions for n, _ in group)
        ]
        if not ready:  # a condition on a label the space does not know: take the rest
            ready = [lab for lab in found if lab.name not in done]
        out += ready
        done |= {lab.name for lab in ready}
    return out


def active(label: Label, chosen: dict[str, Any]) -> bool:
    """Whether hyperopt would evaluate ``label`` given the choices made so far."""
    if not label.conditions:
        return True
    return any(all(chosen.get(n) == v for n, v in group) for group in label.conditions)


def make_sampler(kind: str, seed: int, liar: str) -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=liar == "worst"
        )


def _past(doc: dict, space: list[Label]) -> tuple[dict, dict] | None:
    """A trial's params and distributions in Optuna's terms; None if a value does not fit
    the space (the space changed, or a foreign document): it is left out of the model."""
    vals = (doc.get("misc") or {}).get("vals") or {}
    params, dists = {}, {}
    for lab in space:
        got = vals.get(lab.name) or []
        if not got:
            continue
        value = got[0]
        if type(lab.dist).__name__ != "FloatDistribution":
            value = round(float(value))
        try:
            if not lab.dist._contains(lab.dist.to_internal_repr(value)):
                return None
        except (ValueError, TypeError):
            return None
        params[lab.name], dists[lab.name] = value, lab.dist
    return params, dists


def _frozen(docs: list[dict], space: list[Label], kind: str, liar: str) -> list[Any]:
    from optuna.trial import TrialState, create_trial

    value = lie(finished_losses(docs), liar)
    native = kind == "tpe" and liar == "worst"
    out = []
    for doc in sorted(docs, key=lambda d: d.get("tid", 0)):
        loss = finished_loss(doc)
        if loss is not None:
            state = TrialState.COMPLETE
        elif is_pending(doc) and native:
            state = TrialState.RUNNING
        elif is_pending(doc) and value is not None:
            state, loss = TrialState.COMPLETE, value
        else:
            continue  # failed, error, or a pending trial the liar leaves out
        past = _past(doc, space)
        if past is not None:
            out.append(create_trial(state=state, value=loss, params=past[0], distributions=past[1]))
    return out


def _ask(trial: Any, lab: Label) -> Any:
    """One value through Optuna's public define-by-run API."""
    d = lab.dist
    kind = type(d).__name__
    if kind == "CategoricalDistribution":
        return trial.suggest_categorical(lab.name, d.choices)
    if kind == "IntDistribution":
        return trial.suggest_int(lab.name, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(lab.name, d.low, d.high, step=d.step, log=d.log)


def _sample(trial: Any, space: list[Label]) -> dict[str, list]:
    chosen: dict[str, Any] = {}
    for lab in space:
        if active(lab, chosen):
            chosen[lab.name] = _ask(trial, lab)
    return {lab.name: [lab.write(chosen[lab.name])] if lab.name in chosen else [] for lab in space}


def suggest(
    new_ids: list[int], domain: Any, trials: Any, seed: int, *, kind: str, liar: str
) -> list[dict]:
    """hyperopt's ``algo`` contract, answered by Optuna's ``kind`` sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = labels(domain)
    study = optuna.create_study(sampler=make_sampler(kind, int(seed) % 2**32, liar))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.add_trials(_frozen(list(trials.trials), space, kind, liar))
        docs = []
        for new_id in new_ids:
            vals = _sample(study.ask(), space)
            misc = {
                "tid": new_id,
                "cmd": domain.cmd,
                "workdir": domain.workdir,
                "idxs": {k: [new_id] if v else [] for k, v in vals.items()},
                "vals": vals,
            }
            docs += trials.new_trial_docs([new_id], [None], [domain.new_result()], [misc])
    return docs


def engine(kind: str, liar: str) -> Callable:
    """The ``algo`` function for ``kind`` with ``liar``, as ``fmin`` calls it."""

    def optuna_suggest(new_ids: list[int], domain: Any, trials: Any, seed: int) -> list[dict]:
        return suggest(new_ids, domain, trials, seed, kind=kind, liar=liar)

    optuna_suggest.__name__ = f"optuna_{kind}_suggest"
    return optuna_suggest


def check(kind: str) -> None:
    """The sampler's own dependencies, checked at launch (the GP sampler needs PyTorch)."""
    if kind == "gp":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--algo optuna-gp needs PyTorch (Optuna's GP sampler runs on it), which is not"
                " installed; pip install torch, or use --algo optuna-tpe"
            ) from None
