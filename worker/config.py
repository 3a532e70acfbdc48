"""The worker's command line: hyperopt-mongo-worker's flags plus Strix's own.

Priority: flag > environment variable > :mod:`shared.defaults`, frozen into
:class:`WorkerConfig` once at start.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from shared import defaults
from shared.defaults import setting
from shared.errors import ConfigError

EXAMPLES = """
examples:
  strix-worker --mongo mongodb://strix:***@mongo:27017/?authSource=admin
  strix-worker --mongo mongodb://127.0.0.1:27017 --exp-key convstrix-128px --max-jobs 10
  STRIX_FAKE_GPUS=2 strix-worker --gpu-capacity 4          # two pretend GPUs (tests)
  strix-worker --mongo mongo://127.0.0.1:27017/strix/jobs  # hyperopt-style URI
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="strix-worker",
        description="Pull hyperopt trials from MongoDB and train them on this host's GPU "
        "(a drop-in for hyperopt-mongo-worker).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--mongo", help=f"MongoDB URI (env {defaults.ENV_MONGO}; default {defaults.MONGO_URL})")
    a("--db", help=f"database name if the URI has none (env {defaults.ENV_DB})")
    a("--exp-key", help="only run trials of this study (default: any)")
    a("--workdir", help="directory trials run in (must be writable)")
    a("--max-jobs", type=int, help="exit after this many trials")
    a("--poll-interval", type=float, help=f"idle poll floor, s (default {defaults.POLL_FLOOR_S})")
    a("--poll-cap", type=float, help=f"idle poll backoff cap, s (default {defaults.POLL_CAP_S})")
    a("--reserve-timeout", type=float, help="exit after this many idle seconds (default: never)")
    a("--max-consecutive-failures", type=int, help="exit after this many failed trials in a row")
    a("--last-job-timeout", type=float, help="take no new trial after this many seconds")
    a("--heartbeat", type=float, help=f"seconds between heartbeats (env {defaults.ENV_HEARTBEAT})")
    a("--grace", type=float, help="seconds without heartbeat before a trial is requeued")
    a("--gpu-capacity", type=int, help=f"light trials per GPU (env {defaults.ENV_GPU_CAPACITY})")
    a("--max-attempts", type=int, help="lost runs before a trial is marked ERROR")
    a("--data-dir", help=f"Fashion-MNIST idx directory (env {defaults.ENV_DATA_DIR})")
    a("--cache-dir", help=f"prepared-data cache directory (env {defaults.ENV_CACHE_DIR})")
    a("--isolate", action="store_true", help="run each trial in a fresh subprocess")
    a("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _positive(name: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(
            f"--{name} must be > 0, got {value!r}; pass a positive number or omit the flag "
            "for the default"
        )


def resolve(args: argparse.Namespace) -> WorkerConfig:
    heartbeat = float(setting(args.heartbeat, defaults.ENV_HEARTBEAT, defaults.HEARTBEAT_S))
    try:
        capacity = int(setting(args.gpu_capacity, defaults.ENV_GPU_CAPACITY, defaults.GPU_CAPACITY))
    except ValueError:
        raise ConfigError(
            f"{defaults.ENV_GPU_CAPACITY} must be an integer, got "
            f"{os.environ.get(defaults.ENV_GPU_CAPACITY)!r}"
        ) from None
    cfg = WorkerConfig(
        mongo=str(setting(args.mongo, defaults.ENV_MONGO, defaults.MONGO_URL)),
        db=setting(args.db, defaults.ENV_DB, None),  # type: ignore[arg-type]
        exp_key=args.exp_key,
        workdir=Path(args.workdir) if args.workdir else None,
        max_jobs=args.max_jobs,
        poll_floor=args.poll_interval or defaults.POLL_FLOOR_S,
        poll_cap=args.poll_cap or defaults.POLL_CAP_S,
        reserve_timeout=args.reserve_timeout,
        max_consecutive_failures=args.max_consecutive_failures or defaults.MAX_CONSECUTIVE_FAILURES,
        last_job_timeout=args.last_job_timeout,
        heartbeat=heartbeat,
        grace=args.grace or defaults.GRACE_FACTOR * heartbeat,
        gpu_capacity=capacity,
        max_attempts=args.max_attempts or defaults.MAX_ATTEMPTS,
        data_dir=setting(args.data_dir, defaults.ENV_DATA_DIR, None),  # type: ignore[arg-type]
        cache_dir=setting(args.cache_dir, defaults.ENV_CACHE_DIR, None),  # type: ignore[arg-type]
        isolate=args.isolate,
        host=str(setting(None, defaults.ENV_HOST, os.uname().nodename)),
    )
    validate(cfg)
    return cfg


def validate(cfg: WorkerConfig) -> None:
    if cfg.gpu_capacity < 1:
        raise ConfigError(
            f"--gpu-capacity must be >= 1 light trial per GPU, got {cfg.gpu_capacity}; "
            "e.g. --gpu-capacity 4 on a 40 GB GPU"
        )
    _positive("heartbeat", cfg.heartbeat)
    _positive("grace", cfg.grace)
    _positive("max-attempts", cfg.max_attempts)
    _positive("max-jobs", cfg.max_jobs, allow_none=True)
    _positive("reserve-timeout", cfg.reserve_timeout, allow_none=True)
    if cfg.grace <= cfg.heartbeat:
        raise ConfigError(f"--grace ({cfg.grace}s) must exceed --heartbeat ({cfg.heartbeat}s)")
    if cfg.workdir is not None:
        check_writable(cfg.workdir)


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
