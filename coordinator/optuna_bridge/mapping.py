"""How a Strix job reads in Optuna's terms: params, distributions, state, value, epochs.

Pure functions, no I/O: :mod:`coordinator.optuna_bridge.storage` reads the documents and caches.

**Params.** hyperopt records a trial's parameters in ``misc.vals`` by label:
``{label: [value]}``, or ``{label: []}`` when a conditional branch did not use the label
(VGGStrix's ``conv`` choice). Labels are unique within a space, so the conditional tree
is already flat: a trial's Optuna params are its non-empty labels, and the space graph
says what each label's distribution is:

* ``hp.choice``/``hp.pchoice`` -> categorical. hyperopt stores the option's **index**; the
  dashboard shows the option itself when every option is a plain literal (``16``,
  ``"adam"``), else the index (a branch that holds its own parameters, like ``conv``).
* ``uniform`` -> float; ``loguniform`` -> float with ``log``; ``quniform`` -> int when
  ``q`` is a whole number, else float with ``step=q``; ``qloguniform`` -> int with ``log``
  (q = 1), else float with ``log``; ``randint`` -> int.
* ``normal`` and friends have no bounds: they, and labels the space does not know (no
  Domain attached), get the range of the values the trials took.

The bounds are widened to every value the trials hold, so a distribution always contains
its values (Optuna checks that) even when hyperopt's rounding lands one step outside.

**Trials.** Queued -> WAITING, running -> RUNNING, ok with a finite score -> COMPLETE, a
pruned result (``status: ok`` with ``pruned: true``, as the pruner stores it, so TPE learns
from it) -> PRUNED, anything else (a failed result, a state-3 error)
-> FAIL with its reason in the ``failure_reason`` user attr. A study is scored by
*maximize validation accuracy* when it runs Strix's Keras objective, else by *minimize
hyperopt's loss* (toy and foreign objectives), every trial the same way. Intermediate
values are the per-epoch validation accuracies of the ``metrics`` rows (1 - accuracy in a
loss study), of the run that owns the job (a requeued trial has rows of several runs).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.study import StudyDirection
from optuna.trial import TrialState

from coordinator.study.summary import as_epoch, trial_seconds
from shared.store import State

log = logging.getLogger(__name__)

_LITERAL_TYPES = (str, int, float, bool, type(None))
PRUNED_STATUSES = frozenset({"pruned"})
REASON_CHARS = 300


@dataclass(frozen=True)
class Param:
    """What the space says about one label; ``low``/``high`` are None when unbounded."""

    label: str
    kind: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple | None = None  # categorical: what the dashboard shows, by index


def clean(x: float) -> float:
    """A float without the noise of ``round(x / q) * q`` (0.15000000000000002 -> 0.15)."""
    return float(f"{x:.12g}")


def _plain(x: Any) -> Any:
    """A numpy scalar as the Python value (hyperopt's in-memory trials hold numpy ints)."""
    return x.item() if hasattr(x, "item") and not isinstance(x, str | bytes) else x


def _whole(x: float) -> bool:
    return math.isfinite(x) and float(x) == int(x)


def _args(dist: Any) -> dict[str, Any]:
    """A distribution node's arguments, evaluated (they are literals or arithmetic)."""
    from hyperopt.pyll import rec_eval
    from hyperopt.pyll.base import MissingArgument

    return {k: rec_eval(v) for k, v in dist.arg.items() if v is not MissingArgument}


def _choice(label: str, switch: Any) -> Param:
    options = switch.pos_args[1:]
    values = [getattr(o, "obj", None) for o in options]
    literal = all(
        o.name == "literal" and isinstance(getattr(o, "obj", None), _LITERAL_TYPES) for o in options
    )
    if literal and len(set(map(repr, values))) == len(values):
        return Param(label, "categorical", choices=tuple(values))
    return Param(label, "categorical", choices=tuple(range(len(options))))


def _quantized(label: str, low: float, high: float, q: float, log_scale: bool) -> Param:
    lo, hi = (math.exp(low), math.exp(high)) if log_scale else (low, high)
    lo, hi = clean(round(lo / q) * q), clean(round(hi / q) * q)
    if _whole(q) and _whole(lo) and _whole(hi):
        step = None if log_scale else q  # Optuna: an int with log has step 1
        return Param(label, "int", lo, hi, step=step, log=log_scale and q == 1)
    if log_scale:
        return Param(label, "float", lo, hi, log=True)
    return Param(label, "float", lo, hi, step=q)


def _numeric(label: str, name: str, a: dict[str, Any]) -> Param:
    if name == "uniform":
        return Param(label, "float", a["low"], a["high"])
    if name == "loguniform":
        return Param(
            label, "float", clean(math.exp(a["low"])), clean(math.exp(a["high"])), log=True
        )
    if name in ("quniform", "qloguniform"):
        return _quantized(label, a["low"], a["high"], a["q"], name == "qloguniform")
    if name == "randint":  # randint(upper) binds upper to `low`; randint(low, high)
        low, high = (a["low"], a["high"]) if "high" in a else (0, a["low"])
        return Param(label, "int", low, high - 1)
    if name == "uniformint":
        return Param(label, "int", a["low"], a["high"])
    if name in ("lognormal", "qlognormal"):
        return Param(label, "float", log=True)
    return Param(label, "float")  # normal, qnormal: unbounded, from the values


def space_params(expr: Any) -> dict[str, Param]:
    """Every label of a hyperopt space graph (``domain.expr``), with its distribution."""
    from hyperopt.pyll import dfs

    nodes = dfs(expr)
    switch_of = {
        id(n.pos_args[0]): n
        for n in nodes
        if n.name == "switch" and n.pos_args and n.pos_args[0].name == "hyperopt_param"
    }
    params: dict[str, Param] = {}
    for node in nodes:
        if node.name != "hyperopt_param":
            continue
        label, dist = node.pos_args[0].obj, node.pos_args[1]
        if id(node) in switch_of:
            params[label] = _choice(label, switch_of[id(node)])
        else:
            params[label] = _numeric(label, dist.name, _args(dist))
    return params


def infer_param(label: str, values: list[Any]) -> Param:
    """A label the space does not describe: its distribution from the values alone."""
    values = [_plain(v) for v in values]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        kind = "int" if all(isinstance(v, int) for v in values) else "float"
        return Param(label, kind)
    return Param(label, "categorical", choices=tuple(dict.fromkeys(values)))


def shown(param: Param, raw: Any) -> Any:
    """A ``misc.vals`` value as the dashboard shows it (the option for a literal choice)."""
    raw = _plain(raw)
    if param.kind == "categorical":
        if param.choices is not None and isinstance(raw, int | float) and _whole(raw):
            index = int(raw)
            if 0 <= index < len(param.choices):
                return param.choices[index]
        return raw
    if param.kind == "int":
        return round(float(raw))
    return clean(float(raw)) if param.step else float(raw)


def _widened(param: Param, values: list[Any]) -> Param:
    nums = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not nums:
        return param
    low = min(nums) if param.low is None else min(param.low, *nums)
    high = max(nums) if param.high is None else max(param.high, *nums)
    return replace(param, low=low, high=high, log=param.log and low > 0)


def _divides(step: float | None, low: float, high: float) -> bool:
    """Whether ``step`` tiles [low, high] (Optuna would shrink the range, with a warning)."""
    if not step:
        return True
    span = (Decimal(str(high)) - Decimal(str(low))) / Decimal(str(step))
    return span == span.to_integral_value()


def _build(param: Param) -> BaseDistribution | None:
    """The Optuna distribution for ``param``, or None when Optuna would not take it as is."""
    if param.kind == "categorical":
        return CategoricalDistribution(param.choices or ())
    low = 0.0 if param.low is None else param.low
    high = low if param.high is None else param.high
    if param.kind == "int":
        lo, hi, step = math.floor(low), math.ceil(high), int(param.step or 1)
        if param.log and lo >= 1:
            return IntDistribution(lo, hi, log=True)
        return IntDistribution(lo, hi, step=step) if _divides(step, lo, hi) else None
    if param.log and low > 0:
        return FloatDistribution(low, high, log=True)
    return (
        FloatDistribution(low, high, step=param.step) if _divides(param.step, low, high) else None
    )


def _fits(dist: BaseDistribution | None, values: list[Any]) -> bool:
    try:
        return dist is not None and all(dist._contains(dist.to_internal_repr(v)) for v in values)
    except (ValueError, TypeError):
        return False


def distribution(param: Param, values: Iterable[Any]) -> BaseDistribution:
    """One Optuna distribution for ``param`` that holds every shown value in ``values``:
    the space's, widened to the values; without its step if they left the grid; else the
    values' own range."""
    values = list(values)
    widened = _widened(param, values)
    for candidate in (widened, replace(widened, step=None)):
        dist = _build(candidate)
        if _fits(dist, values):
            return dist  # type: ignore[return-value]
    log.debug("%s: values outside %s; using their range", param.label, widened)
    fallback = _build(_widened(infer_param(param.label, values), values))
    assert fallback is not None  # no step, no log: always buildable
    return fallback


def study_distributions(
    params: dict[str, Param], vals: Iterable[dict[str, list]]
) -> tuple[dict[str, Param], dict[str, BaseDistribution]]:
    """The distribution of every label any trial used, from the space and the values."""
    raw: dict[str, list[Any]] = {}
    for trial_vals in vals:
        for label, got in (trial_vals or {}).items():
            if got:
                raw.setdefault(label, []).append(got[0])
    known = {label: params.get(label) or infer_param(label, vs) for label, vs in raw.items()}
    dists = {
        label: distribution(p, [shown(p, v) for v in raw[label]]) for label, p in known.items()
    }
    return known, dists


def trial_params(
    vals: dict[str, list], params: dict[str, Param], dists: dict[str, BaseDistribution]
) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
    """One trial's active params (conditional labels it did not use are left out)."""
    out: dict[str, Any] = {}
    for label, got in sorted((vals or {}).items()):
        if got and label in dists:
            out[label] = shown(params[label], got[0])
    return out, {label: dists[label] for label in out}


# --- trials: state, value, times, attrs, epochs -------------------------------------------


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


@dataclass(frozen=True)
class Objective:
    """What a study's trials are scored by, and in which direction."""

    name: str  # "val_accuracy" or "loss"
    direction: StudyDirection

    def value(self, result: dict) -> float | None:
        """A finished trial's score; Strix's loss is 1 - val_accuracy, so either gives it."""
        loss = _number(result.get("loss"))
        if self.name == "loss":
            return loss
        acc = _number(result.get("val_accuracy"))
        return acc if acc is not None or loss is None else 1.0 - loss

    def step(self, row: dict) -> float | None:
        """One epoch's intermediate value, on the same scale as :meth:`value`."""
        acc = _number(row.get("val_accuracy"))
        if acc is None or self.name == "val_accuracy":
            return acc
        return 1.0 - acc


VAL_ACCURACY = Objective("val_accuracy", StudyDirection.MAXIMIZE)
LOSS = Objective("loss", StudyDirection.MINIMIZE)


def outcome(doc: dict, objective: Objective) -> tuple[TrialState, float | None, str | None]:
    """A job's (state, value, failure reason) in Optuna's terms."""
    state, result = doc.get("state"), doc.get("result") or {}
    if state == State.NEW:
        return TrialState.WAITING, None, None
    if state == State.RUNNING:
        return TrialState.RUNNING, None, None
    if state != State.DONE:
        error = doc.get("error")
        reason = error[-1] if isinstance(error, list | tuple) and error else error
        return TrialState.FAIL, None, str(reason or f"job state {state!r}")
    status = result.get("status")
    if status in PRUNED_STATUSES or (status == "ok" and result.get("pruned")):
        return TrialState.PRUNED, objective.value(result), None
    if status != "ok":
        return TrialState.FAIL, None, str(result.get("reason") or f"status {status!r}")
    value = objective.value(result)
    if value is None:
        return TrialState.FAIL, None, f"{objective.name} is not a finite number"
    return TrialState.COMPLETE, value, None


def _local(epoch: float | None) -> dt.datetime | None:
    """Optuna's convention: naive local datetimes."""
    return None if epoch is None else dt.datetime.fromtimestamp(epoch)


def times(doc: dict, state: TrialState, now: float) -> tuple[dt.datetime | None, ...]:
    """(start, complete) that satisfy Optuna: running has a start, finished has both."""
    if state == TrialState.WAITING:
        return None, None
    start = as_epoch(doc.get("started")) or as_epoch(doc.get("book_time"))
    if not state.is_finished():
        return _local(start or now), None
    end = as_epoch(doc.get("ended")) or as_epoch(doc.get("refresh_time"))
    start = start or end or now
    return _local(start), _local(max(start, end or start))


def user_attrs(doc: dict, state: TrialState, reason: str | None) -> dict[str, Any]:
    """Where and how long it ran, and why it failed: the columns Strix users look for."""
    worker, result = doc.get("worker") or {}, doc.get("result") or {}
    seconds = trial_seconds(doc) if state.is_finished() else None
    attrs = {
        "tid": doc.get("tid"),
        "host": worker.get("host") or doc.get("owner"),
        "gpu": worker.get("gpu"),
        "epochs": result.get("epochs") or (doc.get("progress") or {}).get("epoch"),
        "seconds": seconds,
        "failure_reason": None if reason is None else reason[:REASON_CHARS],
    }
    return {k: v for k, v in attrs.items() if v is not None}


def steps(rows: Iterable[dict], owner: str | None, objective: Objective) -> dict[int, float]:
    """Per-epoch values of the run that owns the job: a requeued trial has rows of the runs
    that lost it too, and a restarted run must not show the lost run's curve."""
    mine = [r for r in rows if owner is None or r.get("owner") == owner]
    out: dict[int, float] = {}
    for row in mine:
        value, epoch = objective.step(row), row.get("epoch")
        if value is not None and isinstance(epoch, int):
            out[epoch] = value
    return out


def objective_of(domain: Any) -> Objective:
    fn = getattr(domain, "fn", None)
    keras = getattr(fn, "__module__", None) == "shared.training.jobs" and fn.__name__ == "objective"
    return VAL_ACCURACY if keras else LOSS
