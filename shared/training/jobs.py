"""What a trial job carries, and the objective functions that ``fmin`` posts.

``fmin`` pickles its Domain (objective + space) into MongoDB. The objectives here are
module-level functions of the installed ``shared`` package, so cloudpickle stores them by
reference: a worker runs only code it has installed, and :func:`shared.domain.load_domain`
refuses a pickle that would bring any other code along.

The evaluated space is a plain dict (model name, params, data settings, budget, Strix
version), so every worker prepares the identical dataset cache and refuses jobs that a
different Strix release posted.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hyperopt import hp

from shared import __version__
from shared.errors import ConfigError, JobError, StrixError

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """How one trial ended, as the worker records it."""

    OK = "ok"  # a result with status ok: stored, TPE learns from it
    FAILED = "fail"  # a result with status fail (unbuildable, diverged, OOM): stored
    ERROR = "error"  # the job could not run at all: stored as ERROR with its reason
    STOPPED = "stopped"  # the worker stopped: the trial goes back to the queue


@dataclass
class RunContext:
    """What a resident worker lends the objective for one trial (absent under stock workers)."""

    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    judge: Callable[[int, float], Any] | None = None  # the study's pruner, fed by the store
    load_data: Callable[[Any], Any] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    job: dict | None = None
    weights_dir: str | None = None
    cache_dir: str | None = None
    work_dir: str | None = None  # the worker's --workdir: the only place a trial's tb_dir may be
    vault: Any = None  # shared.training.checkpoint.Vault: where the trial checkpoints

    @classmethod
    def from_environment(cls) -> RunContext:
        """A stock hyperopt worker lends nothing: the objective is then the entry point,
        and resolves Strix's data and weights settings itself (flag-less: environment,
        then default)."""
        from shared.config import settings
        from shared.data.cache import load

        v = settings.resolve({}, ["data_dir", "cache_dir", "weights_dir", "home"])
        cache = v["cache_dir"]
        return cls(
            load_data=lambda spec: load(spec, data_dir=v["data_dir"], cache_dir=cache),
            weights_dir=v["weights_dir"],
            cache_dir=cache,
        )


_CONTEXT: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "strix_run_context", default=None
)


@contextmanager
def run_context(ctx: RunContext) -> Iterator[RunContext]:
    token = _CONTEXT.set(ctx)
    try:
        yield ctx
    finally:
        _CONTEXT.reset(token)


def current_context() -> RunContext:
    return _CONTEXT.get() or RunContext.from_environment()


@dataclass(frozen=True)
class JobConfig:
    """The evaluated space of one trial, validated."""

    model: str
    params: dict
    data: dict
    budget: dict
    seed: int | None = None
    weights: str | None = None
    tb_dir: str | None = None
    pruner: dict | None = None  # shared.training.pruning.PrunerConfig as a dict; None: no pruning
    feature_cache: bool = False  # train the head on cached base outputs when the trial can
    strix_version: str = __version__


def parse_config(config: Any) -> JobConfig:
    """Validate a trial's evaluated space; a garbled one gets a JobError saying what is wrong."""
    if not isinstance(config, dict):
        raise JobError(f"trial spec is a {type(config).__name__}, expected a dict")
    missing = {"model", "params", "data", "budget", "strix_version"} - set(config)
    if missing:
        raise JobError(f"trial spec lacks {sorted(missing)}; was it posted by Strix?")
    if config["strix_version"] != __version__:
        raise JobError(
            f"job posted by Strix {config['strix_version']}, this worker runs {__version__}; "
            "run workers of the same version as the coordinator"
        )
    if not isinstance(config["params"], dict) or not isinstance(config["data"], dict):
        raise JobError("trial spec has non-dict params or data")
    _check_pruner(config.get("pruner"))
    known = set(JobConfig.__dataclass_fields__)
    return JobConfig(**{k: v for k, v in config.items() if k in known})


def _check_pruner(pruner: Any) -> None:
    from shared.training.pruning import PrunerConfig

    try:
        PrunerConfig.from_dict(pruner)
    except (ConfigError, TypeError) as e:
        raise JobError(f"trial spec has a bad pruner {pruner!r}: {e}") from None


def keras_space(
    model: str,
    params: dict,
    data: dict,
    budget: dict,
    *,
    seed: int | None = None,
    weights: str | None = None,
    tb_dir: str | None = None,
    pruner: dict | None = None,
    feature_cache: bool = False,
) -> dict:
    """The space ``fmin`` samples: the model's params plus the constants every job carries
    (the pruner among them, so every worker judges every trial by the same rule)."""
    return {
        "model": model,
        "params": params,
        "data": data,
        "budget": budget,
        "seed": seed,
        "weights": weights,
        "tb_dir": tb_dir,
        "pruner": pruner,
        "feature_cache": feature_cache,
        "strix_version": __version__,
    }


def trial_paths(job: JobConfig, ctx: RunContext) -> tuple[str | None, str | None]:
    """(weights, tb_dir) of one trial, each confined to the worker's own directory.

    A job document is written by whoever can write the database, so it may name any path:
    ``weights`` may only name a file in the worker's --weights-dir ("imagenet" picks the
    model's file there), and the trial's TensorBoard directory must lie in its --workdir.
    """
    weights = resolve_weights(job.model, job.weights, ctx.weights_dir)
    return weights, _trial_tb_dir(job.tb_dir, ctx.job, ctx.work_dir)


def confined(path: str, root: str | None) -> str | None:
    """``path`` (relative: to ``root``) with links and ``..`` resolved, if it lies in ``root``;
    None if it does not or there is no root. Pure but for reading existing links."""
    if not root:
        return None
    base = os.path.realpath(os.path.expanduser(root))
    full = os.path.realpath(os.path.join(base, path))
    return full if os.path.commonpath([base, full]) == base else None


def _shown(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def objective(config: dict) -> dict:
    """The fmin objective for Keras models: train one trial, return hyperopt's result dict."""
    return train_job(parse_config(config))


def train_job(job: JobConfig) -> dict:
    """Train one validated trial; a resident worker calls this directly (validated once)."""
    from shared.data.spec import DataSpec
    from shared.training.loop import Budget, run_trial

    ctx = current_context()
    weights, tb_dir = trial_paths(job, ctx)  # refused before anything loads
    try:
        spec = DataSpec.from_dict(job.data)
        data = ctx.load_data(spec)  # type: ignore[misc]
    except StrixError as e:
        return {"status": "fail", "loss": None, "reason": str(e)}
    if ctx.stop.is_set():  # told to stop while TensorFlow or the data loaded: give it back now
        raise InterruptedError("stopped before training started")
    return run_trial(
        job.model,
        job.params,
        data=data,
        budget=Budget.from_dict(job.budget),
        on_epoch=ctx.on_epoch,
        stop=ctx.stop,
        judge=ctx.judge,
        seed=job.seed,
        weights=weights,
        tb_dir=tb_dir,
        feature_cache=_feature_cache(job, ctx),
        vault=ctx.vault,
    )


def _feature_cache(job: JobConfig, ctx: RunContext) -> str | None:
    """The cache directory when this trial trains on cached base outputs, else None."""
    if not job.feature_cache:
        return None
    from shared.data.features import why_not
    from shared.spaces import flatten

    reason = why_not(job.model, flatten(dict(job.params)))
    if reason is not None:
        log.info(
            "trial %s trains on images, not cached features: %s", (ctx.job or {}).get("tid"), reason
        )
        return None
    return ctx.cache_dir or "~/.strix/cache"


def _trial_tb_dir(tb_dir: str | None, job: dict | None, work_dir: str | None) -> str | None:
    """One TensorBoard run per trial: ``<tb_dir>/<exp_key>/trial-<tid>``, in ``work_dir``."""
    if not tb_dir:
        return None
    job = job or {}
    path = os.path.join(tb_dir, str(job.get("exp_key", "study")), f"trial-{job.get('tid', 'x')}")
    inside = confined(path, work_dir)
    if inside is None:
        where = f"its --workdir {_shown(work_dir)}" if work_dir else "a --workdir"
        raise JobError(
            f"refusing the trial's tb_dir {_shown(path)}: a worker writes only under "
            f"{where}; launch with a --tb-dir inside it, or start the worker with a --workdir "
            "that holds the study's --tb-dir"
        )
    return inside


def resolve_weights(model: str, weights: str | None, weights_dir: str | None) -> str | None:
    """ "imagenet" means the local file in ``weights_dir`` when there is one (offline); any
    other file must lie in ``weights_dir`` (a relative name is taken there)."""
    if weights is None:
        return None
    if weights == "imagenet":
        from shared.models import default_weights  # imports Keras: only for Keras trials

        return default_weights(model, weights_dir)
    inside = confined(weights, weights_dir)
    if inside is None:
        shown = _shown(os.path.join(weights_dir or ".", weights))
        where = f"its --weights-dir {_shown(weights_dir)}" if weights_dir else "a --weights-dir"
        raise JobError(
            f"refusing the trial's weights {shown}: a worker loads weight files only from "
            f"{where}; launch with --weights imagenet, none or a file in that directory"
        )
    return inside


def toy_space(sleep_s: float = 0.0) -> dict:
    """A quadratic with an optional sleep: for dispatch benchmarks and scheduler tests."""
    params = {"x": hp.uniform("x", -5.0, 5.0), "sleep": sleep_s}
    return keras_space("toy", params, {}, {})


def toy_objective(config: dict) -> dict:
    """Sleep (interruptibly) then return (x - 1)^2; records when and where it ran."""
    return toy_job(parse_config(config))


def toy_job(job: JobConfig) -> dict:
    ctx = current_context()
    start = time.time()
    if ctx.stop.wait(float(job.params.get("sleep", 0.0))):
        raise InterruptedError("stopped by the worker")
    x = float(job.params["x"])
    return {"status": "ok", "loss": (x - 1.0) ** 2, "start": start, "end": time.time()}


def runner(fn: Callable[[dict], dict]) -> Callable[[JobConfig], dict]:
    """What a resident worker calls for a Strix objective, with the config it validated."""
    return {objective: train_job, toy_objective: toy_job}[fn]
