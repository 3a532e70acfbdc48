"""Every setting a Strix command takes, declared once: flag, environment variable,
default, type and check.

A command adds the settings it uses to its parser with :func:`add`, then resolves them
once with :func:`resolve` (flag > environment > default) into the frozen dataclass it
runs on. Library code never reads the environment; it gets these values passed in.
``docs/config.md`` is generated from this table (``python -m shared.config.settings``) and a
test keeps it current.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.config import defaults as d
from shared.errors import ConfigError
from shared.training import pruning, schedules

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Setting:
    name: str  # the attribute name, e.g. "max_attempts"
    help: str
    default: Any = None
    type: Callable[[str], Any] = str
    env: str | None = ""  # "" means STRIX_<NAME>; None means flag only
    check: Check | None = None
    metavar: str | None = None
    group: str = "general"
    option: str = ""  # the flag, when it is not --<name> (two commands' --host differ)

    @property
    def flag(self) -> str:
        return self.option or "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str | None:
        return f"STRIX_{self.name.upper()}" if self.env == "" else self.env


def at_least(
    low: float, unit: str = "", hint: str = "pass such a number or omit the flag for the default"
) -> Check:
    """A check: the value is ``low`` or more; the message says what came and how to fix it."""
    return lambda v: (
        None if v is None or v >= low else f"must be >= {low:g}{unit}, got {v!r}; {hint}"
    )


def positive(v: Any) -> str | None:
    if v is None or v > 0:
        return None
    return f"must be > 0, got {v!r}; pass a positive number or omit the flag for the default"


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def between(low: int, high: int) -> Check:
    return lambda v: None if low <= v <= high else f"{v!r} is out of range; expected {low}..{high}"


def min_length(n: int) -> Check:
    return lambda v: (
        None
        if len(v) >= n
        else f"must be at least {n} characters (got {len(v)}); e.g. the "
        "output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
    )


def one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, got {v!r}"


_STORE, _GENERAL, _DATA, _WORKER, _STUDY = "MongoDB", "general", "data", "worker", "study"
_DASHBOARD = "dashboard"
_GPU_HINT = "e.g. --gpu-capacity 4 on a 40 GB GPU"

# fmt: off
SETTINGS: dict[str, Setting] = {s.name: s for s in [
    Setting("mongo", f"MongoDB URI (default {d.MONGO_URL}; launch/results: the embedded server)",
            env=d.ENV_MONGO, metavar="URI", group=_STORE),
    Setting("db", f"database, overriding the URI's (default: {d.DB_HELP})", env=d.ENV_DB,
            group=_STORE),
    Setting("home", "where the embedded server, caches, logs and outputs live", "~/.strix",
            env=d.ENV_HOME, metavar="DIR", group=_GENERAL),
    Setting("embedded_port", "port Strix's embedded MongoDB listens on when a command starts "
            "it (`strix mongo start --port`); a running `strix mongo start` server is found "
            "whatever its port", d.EMBEDDED_PORT, int, env=d.ENV_EMBEDDED_PORT,
            check=between(1, 65535), option="--port", group=_STORE),
    Setting("data_dir", "Fashion-MNIST idx directory (default: the study's recorded one, "
            f"then the Debian package {d.DEBIAN_DATA_DIR}, else a download)",
            env=d.ENV_DATA_DIR, metavar="DIR", group=_DATA),
    Setting("cache_dir", "prepared-data cache (default: <home>/cache)", env=d.ENV_CACHE_DIR,
            metavar="DIR", group=_DATA),
    Setting("weights_dir", "local ImageNet weight files for offline hosts (a study's "
            "--weights file must lie in it)",
            env=d.ENV_WEIGHTS_DIR, metavar="DIR", group=_DATA),
    Setting("exp_key", "study name", metavar="KEY", group=_STUDY),
    Setting("heartbeat", "seconds between worker heartbeats", d.HEARTBEAT_S, float,
            env=d.ENV_HEARTBEAT, check=positive, group=_WORKER),
    Setting("grace", "this worker's lease: seconds without a heartbeat before its trial may "
            f"be requeued (default {d.GRACE_FACTOR:g} x heartbeat)", None, float,
            check=positive, group=_WORKER),
    Setting("max_attempts", "lost runs before a trial is marked ERROR", d.MAX_ATTEMPTS, int,
            check=at_least(1), group=_WORKER),
    Setting("checkpoint_every", "minutes between checkpoints inside an epoch (one is saved after "
            "every epoch too, saving at most 5 percent of the time); 0 turns checkpoints off",
            d.CHECKPOINT_EVERY_MIN, float,
            check=at_least(0, " minutes"), metavar="MINUTES", group=_WORKER),
    Setting("checkpoint_dir", "keep checkpoints in this directory (a volume every worker "
            "mounts) instead of MongoDB's GridFS", metavar="DIR", group=_WORKER),
    Setting("keep_best", "keep the final model of this many best trials (strix results "
            "--export)", d.KEEP_BEST, int, check=at_least(0), group=_WORKER),
    Setting("gpu_capacity", "light trials per GPU (a heavy trial takes all of it)",
            d.GPU_CAPACITY, int, env=d.ENV_GPU_CAPACITY,
            check=at_least(1, " light trial per GPU", _GPU_HINT), group=_WORKER),
    Setting("max_jobs", "exit after this many trials (default: no limit)", None, int,
            check=at_least(1), group=_WORKER),
    Setting("max_jobs_in_db", "exit once the database holds this many jobs", None, int,
            check=at_least(1), group=_WORKER),
    Setting("poll_interval", "first idle poll, s; it backs off to --poll-cap", d.POLL_FLOOR_S,
            float, check=positive, group=_WORKER),
    Setting("poll_cap", "idle poll backoff cap, s", d.POLL_CAP_S, float, check=positive,
            group=_WORKER),
    Setting("reserve_timeout", "exit after this many idle seconds (default: never)", None,
            float, check=positive, group=_WORKER),
    Setting("max_consecutive_failures", "exit after this many failed trials in a row",
            d.MAX_CONSECUTIVE_FAILURES, int, check=at_least(1), group=_WORKER),
    Setting("last_job_timeout", "take no new trial after this many seconds", None, float,
            check=positive, group=_WORKER),
    Setting("workdir", "directory trials run in (must be writable; a study's --tb-dir must "
            "lie in it)", metavar="DIR",
            group=_WORKER),
    Setting("allow_module", "also run objectives from this installed package (repeatable or "
            "comma-separated)", (), _csv, env=d.ENV_ALLOW_MODULES, metavar="PKG",
            group=_WORKER),
    Setting("host", "host name the GPU leases are kept under (default: this host's name)",
            env=d.ENV_HOST, group=_WORKER),
    Setting("isolate", "run each trial in a fresh subprocess", False, _bool, group=_WORKER),
    Setting("backend", "Keras backend (the extras [jax] and [torch] install the others)",
            "tensorflow", env="KERAS_BACKEND", check=one_of("tensorflow", "jax", "torch"),
            group=_WORKER),
    Setting("precision", "Keras's mixed-precision policy", "float32",
            check=one_of("float32", "mixed_bfloat16", "mixed_float16"), group=_WORKER),
    Setting("fake_gpus", "pretend this host has N GPUs, computing on the CPU (tests)",
            env=d.ENV_FAKE_GPUS, group=_WORKER),
    Setting("gpus", "this host's GPU indices, e.g. 0,1 (default: what nvidia-smi lists)",
            env=d.ENV_GPUS, group=_WORKER),
    Setting("gpu", "pin this worker to one GPU index (default: the least used one)",
            env=d.ENV_GPU, group=_WORKER),
    Setting("pruner", "stop hopeless trials early: none, median or asha", pruning.DEFAULT_KIND,
            check=one_of(*pruning.KINDS), group=_STUDY),
    Setting("min_epochs", "ASHA's first rung, the median rule's warm-up (epochs)",
            pruning.DEFAULT_MIN_EPOCHS, int, check=at_least(1), group=_STUDY),
    Setting("reduction_factor", "ASHA's eta: keep the top 1/eta at each rung",
            pruning.DEFAULT_REDUCTION_FACTOR, int, check=at_least(2), group=_STUDY),
    Setting("pruner_startup", "the median rule's minimum number of other trials",
            pruning.DEFAULT_STARTUP, int, check=at_least(1), group=_STUDY),
    Setting("algo", "suggestion engine: hyperopt's tpe, rand or anneal, or Optuna's "
            "multivariate TPE (optuna-tpe) or GP (optuna-gp) sampler", d.ALGO,
            check=one_of(*d.ALGOS), group=_STUDY),
    Setting("liar", "what the engine is told about queued and running trials: the worst, "
            "mean or best finished loss, or none (left out)", d.LIAR,
            check=one_of(*d.LIARS), group=_STUDY),
    Setting("stop_after", "stop posting when the best loss has not improved for N finished "
            "trials", None, int, check=at_least(1), group=_STUDY),
    Setting("timeout", "stop posting after this many minutes; running trials finish", None,
            float, check=positive, group=_STUDY),
    Setting("monitor", "what early stopping watches and restores: val_loss (the seed's rule) "
            "or val_accuracy",
            schedules.DEFAULT_MONITOR, check=one_of(*schedules.MONITORS), group=_STUDY),
    Setting("dashboard_host", "address to bind (127.0.0.1: this machine only)", "127.0.0.1",
            env=d.ENV_DASHBOARD_HOST, option="--host", group=_DASHBOARD),
    Setting("dashboard_port", "port (0 picks a free one)", 8080, int,
            check=between(0, 65535), env=d.ENV_DASHBOARD_PORT, option="--port",
            group=_DASHBOARD),
    Setting("dashboard_token", "the token every page and API call must carry (required "
            "beyond loopback; unset: a new one is printed at start); environment only, a "
            "command line is world-readable", check=min_length(16), env=d.ENV_DASHBOARD_TOKEN,
            option=d.ENV_DASHBOARD_TOKEN, group=_DASHBOARD),
]}
# fmt: on


def add(parser: argparse.ArgumentParser | Any, *names: str, **defaults: Any) -> None:
    """Add these settings as flags; the help shows the environment variable and default.

    Flags default to None so :func:`resolve` can tell "not given" from "given as 0".
    ``defaults`` overrides a setting's default for this command only.
    """
    for name in names:
        s = SETTINGS[name]
        default = defaults.get(name, s.default)
        where = [f"env {s.env_var}"] if s.env_var else []
        if default not in (None, (), "") and "default" not in s.help:
            where.append(f"default {_shown(default)}")
        help_text = s.help + (f" ({'; '.join(where)})" if where else "")
        if s.type is _bool:
            parser.add_argument(
                s.flag, dest=name, action="store_true", default=None, help=help_text
            )
            continue
        if s.type is _csv:
            parser.add_argument(
                s.flag, dest=name, action="append", metavar=s.metavar, help=help_text
            )
            continue
        parser.add_argument(s.flag, dest=name, type=s.type, metavar=s.metavar, help=help_text)


def _shown(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def _kind(s: Setting) -> str:
    return {int: "an integer", float: "a number", _bool: "true or false"}.get(s.type, "valid")


def _from_env(s: Setting, env: Mapping[str, str]) -> Any:
    raw = env.get(s.env_var, "") if s.env_var else ""
    if raw == "":
        return None
    try:
        return s.type(raw)
    except ValueError:
        raise ConfigError(f"{s.env_var} must be {_kind(s)}, got {raw!r}") from None


def resolve(
    args: argparse.Namespace | Mapping[str, Any],
    names: Iterable[str],
    env: Mapping[str, str] | None = None,
    **defaults: Any,
) -> dict[str, Any]:
    """flag > environment > default, each value checked; a bad one is one ConfigError."""
    env = os.environ if env is None else env
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    out = {}
    for name in names:
        s = SETTINGS[name]
        value = given.get(name)
        if isinstance(value, str | list) and s.type is _csv:
            value = _csv(value) if isinstance(value, str) else _csv(",".join(value))
        if value is None:
            value = _from_env(s, env)
        if value is None:
            value = defaults.get(name, s.default)
        problem = s.check(value) if s.check and value is not None else None
        if problem:
            raise ConfigError(f"{s.flag} {problem}")
        out[name] = value
    if out.get("cache_dir", "") is None and "home" in out:  # the one derived default
        out["cache_dir"] = os.path.join(os.path.expanduser(out["home"]), "cache")
    return out


def markdown() -> str:
    """docs/config.md: every setting, its flag, variable and default, by group."""
    lines = [
        "# Configuration",
        "",
        "Generated from `shared/config/settings.py` by `python -m shared.config.settings`;",
        "a test keeps it current. Every setting resolves as: command-line flag, then",
        "environment variable, then default. Commands take the settings they use",
        "(`strix CMD --help` lists them).",
    ]
    for group in dict.fromkeys(s.group for s in SETTINGS.values()):
        lines += ["", f"## {group}", "", "| flag | environment | default | meaning |"]
        lines.append("| --- | --- | --- | --- |")
        for s in (s for s in SETTINGS.values() if s.group == group):
            default = "" if s.default in (None, (), "") else f"`{_shown(s.default)}`"
            env = f"`{s.env_var}`" if s.env_var else ""
            flag = "(environment only)" if s.flag == s.env_var else f"`{s.flag}`"
            lines.append(f"| {flag} | {env} | {default} | {s.help} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
