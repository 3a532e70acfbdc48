"""The worker's command line: hyperopt-mongo-worker's flags plus Strix's own.

Every setting is declared in :mod:`shared.config.settings` and resolved once here (flag >
environment > default) into the frozen :class:`WorkerConfig`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from shared.config import defaults, settings
from shared.config.cli import new_parser
from shared.errors import ConfigError

EXAMPLES = """
examples:
  strix-worker --mongo mongodb://strix:***@mongo:27017/?authSource=admin
  strix-worker --mongo mongodb://127.0.0.1:27017 --exp-key convstrix-128px --max-jobs 10
  STRIX_FAKE_GPUS=2 strix-worker --gpu-capacity 4          # two pretend GPUs (tests)
  strix-worker --mongo mongo://127.0.0.1:27017/strix/jobs  # hyperopt-style URI
  # a hyperopt-mongo-worker command line, with its own objective package allowed:
  strix-worker --mongo=localhost:27017/foo_db --poll-interval=0.1 --allow-module myproject
  # spot GPUs: checkpoint every 2 minutes inside epochs, on a volume every worker mounts
  strix-worker --checkpoint-every 2 --checkpoint-dir /mnt/shared/strix-checkpoints
"""


@dataclass(frozen=True)
class WorkerConfig:
    mongo: str
    db: str | None
    exp_key: str | None
    workdir: Path | None
    max_jobs: int | None
    poll_floor: float
    poll_cap: float
    reserve_timeout: float | None
    max_consecutive_failures: int
    last_job_timeout: float | None
    heartbeat: float
    grace: float
    gpu_capacity: int
    max_attempts: int
    data_dir: str | None
    cache_dir: str | None
    isolate: bool
    host: str
    allow_modules: tuple[str, ...] = ()
    max_jobs_in_db: int | None = None
    fake_gpus: str | None = None
    gpus: str | None = None
    gpu: str | None = None
    home: str = "~/.strix"
    weights_dir: str | None = None
    backend: str = "tensorflow"
    precision: str = "float32"
    checkpoint_every: float = defaults.CHECKPOINT_EVERY_MIN  # minutes; 0: no checkpoints
    checkpoint_dir: str | None = None  # None: GridFS
    keep_best: int = defaults.KEEP_BEST


SETTINGS = (
    "exp_key",
    "workdir",
    "max_jobs",
    "max_jobs_in_db",
    "poll_interval",
    "poll_cap",
    "reserve_timeout",
    "max_consecutive_failures",
    "last_job_timeout",
    "heartbeat",
    "grace",
    "gpu_capacity",
    "max_attempts",
    "data_dir",
    "cache_dir",
    "weights_dir",
    "allow_module",
    "host",
    "fake_gpus",
    "gpus",
    "gpu",
    "home",
    "backend",
    "precision",
    "checkpoint_every",
    "checkpoint_dir",
    "keep_best",
)


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(
        "strix-worker",
        "Pull hyperopt trials from MongoDB and train them on this host's GPU (a drop-in for "
        "hyperopt-mongo-worker: --mongo also takes its host:port/db form).",
        EXAMPLES,
        store=True,
    )
    settings.add(p, *SETTINGS)
    iso = p.add_mutually_exclusive_group()
    iso.add_argument(
        "--isolate",
        "--use-subprocesses",
        dest="isolate",
        action="store_true",
        default=None,
        help="run each trial in a fresh subprocess (hyperopt-mongo-worker's default)",
    )
    iso.add_argument(
        "--no-subprocesses",
        dest="isolate",
        action="store_false",
        help="run trials in this resident process (Strix's default)",
    )
    return p


def _at_least(name: str, value: float | None, low: float) -> None:
    if value is not None and value < low:
        raise ConfigError(
            f"--{name} must be >= {low:g}, got {value!r}; pass such a number or omit the "
            "flag for the default"
        )


def mongo_url(value: str) -> str:
    """hyperopt-mongo-worker's ``host:port/db`` becomes ``mongo://host:port/db``."""
    if "://" in value:
        return value
    host, _, db = value.partition("/")
    if not host or not db:
        raise ConfigError(
            f"malformed --mongo {value!r}: expected hyperopt's host[:port]/db (e.g. "
            "localhost:27017/strix), or a mongodb://[user:pass@]host[:port][/db] URI"
        )
    return f"mongo://{value}"


def _modules(mods: tuple[str, ...]) -> tuple[str, ...]:
    bad = [m for m in mods if not all(part.isidentifier() for part in m.split("."))]
    if bad:
        raise ConfigError(
            f"--allow-module {bad[0]!r} is not a package name; give an installed package, "
            "e.g. --allow-module myproject"
        )
    return mods


# settings that go into WorkerConfig under their own name, unchanged
_AS_IS = ("db", "exp_key", "max_jobs", "max_jobs_in_db", "poll_cap", "reserve_timeout")
_AS_IS += ("max_consecutive_failures", "last_job_timeout", "heartbeat", "gpu_capacity")
_AS_IS += ("max_attempts", "data_dir", "host", "fake_gpus", "gpus", "gpu", "home")
_AS_IS += ("weights_dir", "backend", "precision", "checkpoint_every", "checkpoint_dir")
_AS_IS += ("keep_best",)


def resolve(args: argparse.Namespace) -> WorkerConfig:
    v = settings.resolve(args, ("mongo", "db", "isolate", *SETTINGS), host=os.uname().nodename)
    grace = v["grace"] if v["grace"] is not None else defaults.GRACE_FACTOR * v["heartbeat"]
    cfg = WorkerConfig(
        **{k: v[k] for k in _AS_IS},
        mongo=mongo_url(v["mongo"] or defaults.MONGO_URL),
        workdir=Path(v["workdir"]) if v["workdir"] else None,
        poll_floor=v["poll_interval"],
        grace=grace,
        cache_dir=v["cache_dir"],
        isolate=bool(v["isolate"]),
        allow_modules=_modules(v["allow_module"]),
    )
    validate(cfg)
    return cfg


def validate(cfg: WorkerConfig) -> None:
    """What no single setting's check can see: how settings relate to each other."""
    _at_least("poll-cap", cfg.poll_cap, cfg.poll_floor)
    if cfg.grace <= cfg.heartbeat:
        raise ConfigError(f"--grace ({cfg.grace}s) must exceed --heartbeat ({cfg.heartbeat}s)")
    if cfg.workdir is not None:
        check_writable(cfg.workdir)
    if cfg.data_dir is not None:  # a broken --data-dir fails now, not at the first trial
        from shared.data.idx import find_data_dir

        find_data_dir(cfg.data_dir)


def check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".strix-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"--workdir {path} is not writable ({e.strerror}); pick a directory this user "
            "can write, or omit --workdir"
        ) from None
