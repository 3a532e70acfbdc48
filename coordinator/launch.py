"""``python -m coordinator.launch``: post a hyperopt study to MongoDB and see it through.

With no ``--mongo`` it runs on the embedded default (an nx-27017 server under
``$STRIX_HOME``), and ``--local-workers N`` trains on this host, so one command runs a
whole study on a laptop. The same ``--exp-key`` resumes a study where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared import defaults
from shared.defaults import DB_HELP, setting
from shared.errors import ConfigError, StrixError

if TYPE_CHECKING:  # heavy imports (TensorFlow, OpenCV) wait until they are needed
    from coordinator.study import Study
    from shared.data import DataSpec
    from shared.models import ModelInfo
    from shared.store import Store

log = logging.getLogger("coordinator.launch")

EXAMPLES = """
examples:
  # a whole study on this machine: embedded MongoDB + 2 local workers, small images
  python -m coordinator.launch --model convstrix --local-workers 2 --max-evals 4 --image-size 32
  # the seed's transfer study on a GPU cluster (workers started by docker compose)
  python -m coordinator.launch --model vggstrix --mongo mongodb://strix:***@db:27017/?authSource=admin
  # resume: the same --exp-key continues where it stopped
  python -m coordinator.launch --model convstrix --exp-key convstrix-128px --max-evals 50
"""


@dataclass(frozen=True)
class LaunchConfig:
    model: str
    exp_key: str
    max_evals: int
    mongo: str | None
    db: str | None
    algo: str
    max_queue_len: int
    image_size: int
    channels: int
    interpolation: str
    limit: int | None
    max_epochs: int
    patience: int
    seed: int | None
    local_workers: int
    data_dir: str | None
    cache_dir: str | None
    weights: str | None
    tb_dir: str | None
    resource: str
    clamp: bool
    augment: bool
    heartbeat: float
    max_attempts: int
    gpu_capacity: int | None
    progress: bool
    home: Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m coordinator.launch",
        description="Tune a Fashion-MNIST model with hyperopt; trials run on Strix workers.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--model", default="convstrix", help="convstrix, vggstrix, baseline, simplecnn, ...")
    a("--max-evals", type=int, default=defaults.MAX_EVALS, help="trials in the study")
    a("--exp-key", help="study name (default: <model>-<size>px); reuse it to resume")
    a("--mongo", help=f"MongoDB URI (env {defaults.ENV_MONGO}); omit for the embedded server")
    a("--db", help=f"database, overriding the URI's (env {defaults.ENV_DB}; default: {DB_HELP})")
    a("--algo", default=defaults.ALGO, choices=["tpe", "rand"], help="search algorithm")
    a("--max-queue-len", type=int, help="trials queued ahead (default 2x workers, at least 4)")
    a("--image-size", type=int, help="input side in px (default: the model's, e.g. 128)")
    a("--channels", type=int, choices=[1, 3], help="image channels (default: the model's)")
    a("--interpolation", default=defaults.INTERPOLATION, help="cubic, area, linear, nearest")
    a("--limit", type=int, help="train on a stratified subset of N images (quick runs)")
    a("--max-epochs", type=int, default=defaults.MAX_EPOCHS, help="epochs budget per trial")
    a("--patience", type=int, default=defaults.PATIENCE, help="early-stopping patience")
    a("--seed", type=int, help="seed for TPE and for training")
    a("--local-workers", type=int, default=0, help="start N workers on this host")
    a("--data-dir", help=f"Fashion-MNIST idx directory (env {defaults.ENV_DATA_DIR})")
    a("--cache-dir", help=f"prepared-data cache (env {defaults.ENV_CACHE_DIR})")
    a("--weights", help="pretrained models: imagenet (default), none, or a local .h5 file")
    a("--tb-dir", help="write TensorBoard logs of every trial under this (shared) directory")
    a("--resource", choices=["light", "heavy"], help="override the model's resource class")
    a("--clamp", action="store_true", help="limit num_blocks to what the image size allows")
    a("--augment", action="store_true", help="also tune crop/flip/rotate augmentation")
    a("--heartbeat", type=float, help=f"worker heartbeat, s (default {defaults.HEARTBEAT_S})")
    a("--max-attempts", type=int, default=defaults.MAX_ATTEMPTS, help="lost runs per trial")
    a("--gpu-capacity", type=int, help="light trials per GPU, for --local-workers")
    a("--no-progress", action="store_true", help="no progress bar")
    a("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _checked_model(args: argparse.Namespace) -> tuple[ModelInfo, int]:
    """Validate the flags that need no TensorFlow first, then the model and image size."""
    from shared.spaces import SPACES

    if args.model not in SPACES:  # checked before TensorFlow loads with shared.models
        raise ConfigError(
            f"unknown model {args.model!r}; choose one of: {', '.join(sorted(SPACES))}"
        )
    _check_positive("--max-evals", args.max_evals)
    _check_positive("--max-epochs", args.max_epochs)
    _check_positive("--max-attempts", args.max_attempts)
    if args.patience < 0:
        raise ConfigError(f"--patience must be >= 0 epochs, got {args.patience}; e.g. 5")
    for flag, value in (
        ("--gpu-capacity", args.gpu_capacity),
        ("--image-size", args.image_size),
        ("--max-queue-len", args.max_queue_len),
    ):
        if value is not None:
            _check_positive(flag, value)
    if args.heartbeat is not None and args.heartbeat <= 0:
        raise ConfigError(f"--heartbeat must be > 0 seconds, got {args.heartbeat:g}; e.g. 10")
    if args.local_workers < 0:
        raise ConfigError(f"--local-workers must be >= 0, got {args.local_workers}; e.g. 2")
    from shared.models import get_model

    info = get_model(args.model)
    size = info.image_size if args.image_size is None else args.image_size
    if size < info.min_size:
        raise ConfigError(
            f"--image-size {size} is too small for {info.name}; it needs at least {info.min_size}"
        )
    return info, size


def resolve(args: argparse.Namespace) -> LaunchConfig:
    info, size = _checked_model(args)
    weights = args.weights or ("imagenet" if info.weights_file else None)
    cfg = LaunchConfig(
        model=info.name,
        exp_key=args.exp_key or f"{info.name}-{size}px",
        max_evals=args.max_evals,
        mongo=setting(args.mongo, defaults.ENV_MONGO, None),
        db=setting(args.db, defaults.ENV_DB, None),
        algo=args.algo,
        max_queue_len=args.max_queue_len or max(4, 2 * args.local_workers),  # None: default
        image_size=size,
        channels=args.channels or info.channels,
        interpolation=args.interpolation,
        limit=args.limit,
        max_epochs=args.max_epochs,
        patience=args.patience,
        seed=args.seed,
        local_workers=args.local_workers,
        data_dir=setting(args.data_dir, defaults.ENV_DATA_DIR, None),
        cache_dir=setting(args.cache_dir, defaults.ENV_CACHE_DIR, None)
        or str(defaults.strix_home() / "cache"),
        weights=None if weights in ("none", "None") else weights,
        tb_dir=args.tb_dir,
        resource=args.resource or info.resource,
        clamp=args.clamp,
        augment=args.augment,
        heartbeat=float(setting(args.heartbeat, defaults.ENV_HEARTBEAT, defaults.HEARTBEAT_S)),
        max_attempts=args.max_attempts,
        gpu_capacity=args.gpu_capacity,
        progress=not args.no_progress,
        home=defaults.strix_home(),
    )
    data_spec(cfg)  # bad --limit/--interpolation fail now, before any server starts
    return cfg


_EXAMPLE_VALUES = {"--max-evals": 50, "--max-epochs": 50, "--gpu-capacity": 4}


def _check_positive(flag: str, value: int) -> None:
    if value is None or value < 1:
        raise ConfigError(
            f"{flag} must be a positive integer, got {value!r}; e.g. {flag} "
            f"{_EXAMPLE_VALUES.get(flag, 1)}"
        )


def data_spec(cfg: LaunchConfig) -> DataSpec:
    from shared.data import DataSpec

    seed = defaults.SPLIT_SEED if cfg.seed is None else cfg.seed
    return DataSpec(
        image_size=cfg.image_size,
        channels=cfg.channels,
        interpolation=cfg.interpolation,
        limit=cfg.limit,
        seed=seed,
    )


def make_study(cfg: LaunchConfig, store: Store) -> Study:
    from coordinator.study import Study
    from shared.jobs import keras_space, objective
    from shared.models import get_model
    from shared.training import Budget

    params = get_model(cfg.model).space(
        image_size=cfg.image_size, clamp=cfg.clamp, augment=cfg.augment
    )
    budget = Budget(max_epochs=cfg.max_epochs, patience=cfg.patience).to_dict()
    space = keras_space(
        cfg.model,
        params,
        data_spec(cfg).to_dict(),
        budget,
        seed=cfg.seed,
        weights=cfg.weights,
        tb_dir=cfg.tb_dir,
    )
    return Study(
        store,
        cfg.exp_key,
        objective,
        space,
        cfg.max_evals,
        algo=cfg.algo,
        max_queue_len=cfg.max_queue_len,
        resource=cfg.resource,
        meta={"model": cfg.model},
        seed=cfg.seed,
    )


def worker_args(cfg: LaunchConfig, url: str) -> list[str]:
    args = ["--mongo", url, "--exp-key", cfg.exp_key] + (["--db", cfg.db] if cfg.db else [])
    args += ["--heartbeat", str(cfg.heartbeat), "--max-attempts", str(cfg.max_attempts)]
    for flag, value in (
        ("--data-dir", cfg.data_dir),
        ("--cache-dir", cfg.cache_dir),
        ("--gpu-capacity", cfg.gpu_capacity),
    ):
        if value is not None:
            args += [flag, str(value)]
    return args


def run(cfg: LaunchConfig) -> int:
    from coordinator import study as study_mod
    from coordinator.local import LocalWorkers, embedded_or_running
    from coordinator.summary import format_table, top_trials
    from shared.store import connect

    with ExitStack() as stack:
        url = cfg.mongo or embedded_or_running(cfg.home, stack)
        store = connect(url, cfg.db)
        stack.callback(store.close)
        store.create_indexes()
        log.info(
            "study %s on %s: %d trials of %s",
            cfg.exp_key,
            store.target.redacted,
            cfg.max_evals,
            cfg.model,
        )
        workers = None
        if cfg.local_workers:
            from shared.data import prepare

            prepare(data_spec(cfg), data_dir=cfg.data_dir, cache_dir=cfg.cache_dir, progress=True)
            workers = LocalWorkers(cfg.local_workers, worker_args(cfg, url), cfg.home / "logs")
            stack.callback(workers.stop)
            workers.start()
        study_mod.run(
            make_study(cfg, store),
            grace=defaults.GRACE_FACTOR * cfg.heartbeat,
            max_attempts=cfg.max_attempts,
            on_tick=workers.check if workers else None,
            progress=cfg.progress,
        )
        print("\n" + closing_line(store, cfg.exp_key))
        print(format_table(top_trials(store, cfg.exp_key, 10)))
    return 0


def closing_line(store: Store, exp_key: str) -> str:
    from coordinator.progress import best_text

    tally = store.tally(exp_key)
    best = best_text(next(iter(store.best(exp_key)), None))
    return f"study {exp_key} finished: best {best}; " + ", ".join(
        f"{tally[k]} {k}" for k in ("ok", "failed", "error", "running", "queued")
    )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("hyperopt", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return run(resolve(args))
    except StrixError as e:
        print(f"launch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: trials stay in MongoDB; run the same command to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
