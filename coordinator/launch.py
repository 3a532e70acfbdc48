"""``strix launch`` (``python -m coordinator.launch``): post a hyperopt study to MongoDB
and see it through.

With no ``--mongo`` it runs on the embedded default (an nx-27017 server under the Strix
home), and ``--local-workers N`` trains on this host, so one command runs a whole study on
a laptop. The same ``--exp-key`` resumes a study where it stopped. Every flag is checked
before TensorFlow is imported or MongoDB is contacted.
"""

from __future__ import annotations

import argparse
import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared import catalog
from shared.config import cli, defaults, settings
from shared.errors import ConfigError
from shared.training import backend

if TYPE_CHECKING:  # heavy imports (TensorFlow, OpenCV, hyperopt) wait until they are needed
    from coordinator.study.study import Study
    from shared.data.spec import DataSpec
    from shared.store import Store

log = logging.getLogger(__name__)

PROG = "strix launch"
EXAMPLES = """
  # a whole study on this machine: embedded MongoDB + 2 local workers, small images
  strix launch --model convstrix --local-workers 2 --max-evals 4 --image-size 32
  # the seed's transfer study on a GPU cluster (workers started by docker compose)
  python -m coordinator.launch --model vggstrix --mongo mongodb://strix:***@db:27017/?authSource=admin
  # resume: the same --exp-key continues where it stopped, with the same data and pruner
  strix launch --model convstrix --exp-key convstrix-128px --max-evals 50
  # prune with the median rule instead of ASHA; stop after 10 trials without progress
  strix launch --model convstrix --pruner median --min-epochs 3 --stop-after 10
  # every trial to its end, as the seed did, within a 2-hour budget
  strix launch --model convstrix --pruner none --timeout 120
"""
SHARED = ("exp_key", "data_dir", "cache_dir", "weights_dir", "home", "heartbeat")
SHARED += ("max_attempts", "gpu_capacity", "backend", "precision", "stop_after", "timeout")
SHARED += ("monitor",)
# launch setting -> PrunerConfig field; unset ones come from the stored study, else defaults
PRUNER_SETTINGS = {
    "pruner": "kind",
    "min_epochs": "min_epochs",
    "reduction_factor": "reduction_factor",
    "pruner_startup": "startup",
}


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
    cache_dir: str
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
    weights_dir: str | None = None
    feature_cache: bool = False
    backend: str = "tensorflow"
    precision: str = "float32"
    pruner: dict = field(default_factory=dict)  # PrunerConfig fields given on the command line
    stop_after: int | None = None
    timeout_min: float | None = None
    monitor: str = "val_loss"  # what early stopping watches and restores


def build_parser() -> argparse.ArgumentParser:
    description = "Tune a Fashion-MNIST model with hyperopt; trials run on Strix workers."
    p = cli.new_parser(PROG, description, EXAMPLES, store=True)
    a = p.add_argument
    a("--model", default="convstrix", help=f"one of: {', '.join(catalog.NAMES)}")
    a("--max-evals", type=int, default=defaults.MAX_EVALS, help="trials in the study")
    a("--algo", default=defaults.ALGO, choices=["tpe", "rand"], help="search algorithm")
    a("--max-queue-len", type=int, help="trials queued ahead (default: 2x workers, at least 4)")
    a("--image-size", type=int, help="input side in px (default: the model's, e.g. 128)")
    a("--channels", type=int, choices=[1, 3], help="image channels (default: the model's)")
    a("--interpolation", default=defaults.INTERPOLATION, help="cubic, area, linear, nearest")
    a("--limit", type=int, help="train on a stratified subset of N images (quick runs)")
    a("--max-epochs", type=int, default=defaults.MAX_EPOCHS, help="epochs budget per trial")
    a("--patience", type=int, default=defaults.PATIENCE, help="early-stopping patience")
    a("--seed", type=int, help="seed for TPE and for training")
    a("--local-workers", type=int, default=0, help="start N workers on this host")
    a("--weights", help="imagenet (the default), none, or an .h5 file in workers' --weights-dir")
    a("--tb-dir", help="TensorBoard logs of every trial go here: a dir in workers' --workdir")
    a("--resource", choices=catalog.RESOURCES, help="override the model's resource class")
    a("--clamp", action="store_true", help="limit num_blocks to what the image size allows")
    a("--augment", action="store_true", help="also tune crop/flip/rotate augmentation")
    a(
        "--feature-cache",
        choices=["auto", "off"],
        default="auto",
        help="auto: a frozen-base model without augmentation trains its head on base outputs "
        "computed once per host, as a light trial; off: every trial runs the whole model",
    )
    a("--no-progress", action="store_true", help="no progress bars or progress lines")
    settings.add(p, *SHARED, *PRUNER_SETTINGS)
    return p


_EXAMPLE_VALUES = {"--max-evals": 50, "--max-epochs": 50}


def _check_positive(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(
            f"{flag} must be a positive integer, got {value!r}; e.g. {flag} "
            f"{_EXAMPLE_VALUES.get(flag, 1)}"
        )


def _check(args: argparse.Namespace) -> int:
    """The checks no setting declaration covers; returns the image size."""
    info = catalog.entry(args.model)
    for flag in ("max_evals", "max_epochs", "image_size", "max_queue_len"):
        _check_positive("--" + flag.replace("_", "-"), getattr(args, flag))
    if args.patience < 1:  # Budget's rule: early stopping waits at least one epoch
        raise ConfigError(f"--patience must be >= 1 epoch, got {args.patience}; e.g. 5")
    if args.local_workers < 0:
        raise ConfigError(f"--local-workers must be >= 0, got {args.local_workers}; e.g. 2")
    size = info.image_size if args.image_size is None else args.image_size
    catalog.check_size(info.name, size)
    return size


def resolve(args: argparse.Namespace) -> LaunchConfig:
    """Everything checked and frozen, in milliseconds: no TensorFlow, no MongoDB."""
    size = _check(args)
    info = catalog.entry(args.model)
    v = settings.resolve(args, ("mongo", "db", *SHARED))
    home = Path(v["home"]).expanduser()
    weights = args.weights or ("imagenet" if info.weights_file else None)
    cfg = LaunchConfig(
        model=info.name,
        exp_key=v["exp_key"] or f"{info.name}-{size}px",
        max_evals=args.max_evals,
        mongo=v["mongo"],
        db=v["db"],
        algo=args.algo,
        max_queue_len=args.max_queue_len or max(4, 2 * args.local_workers),
        image_size=size,
        channels=args.channels or info.channels,
        interpolation=args.interpolation,
        limit=args.limit,
        max_epochs=args.max_epochs,
        patience=args.patience,
        seed=args.seed,
        local_workers=args.local_workers,
        data_dir=v["data_dir"],
        cache_dir=v["cache_dir"],
        weights=None if weights in ("none", "None") else weights,
        tb_dir=args.tb_dir,
        resource=args.resource or _resource(info, args),
        clamp=args.clamp,
        augment=args.augment,
        heartbeat=v["heartbeat"],
        max_attempts=v["max_attempts"],
        gpu_capacity=args.gpu_capacity,
        feature_cache=_cacheable(info, args),
        progress=not args.no_progress,
        home=home,
        weights_dir=v["weights_dir"],
        backend=v["backend"],
        precision=v["precision"],
        pruner=_given_pruner(args),
        stop_after=v["stop_after"],
        timeout_min=v["timeout"],
        monitor=v["monitor"],
    )
    _check_sources(cfg)
    return cfg


def _given_pruner(args: argparse.Namespace) -> dict:
    """The pruner fields set by flag or environment: those a resumed study must match."""
    unset = dict.fromkeys(PRUNER_SETTINGS)
    given = settings.resolve(args, PRUNER_SETTINGS, **unset)  # type: ignore[arg-type]
    fields = {PRUNER_SETTINGS[k]: v for k, v in given.items() if v is not None}
    first = fields.get("min_epochs", settings.SETTINGS["min_epochs"].default)
    asked = fields.keys() & {"kind", "min_epochs"} and fields.get("kind") != "none"
    if asked and first >= args.max_epochs:
        raise ConfigError(
            f"--min-epochs {first} leaves no epoch to judge before --max-epochs "
            f"{args.max_epochs}: nothing would be pruned; lower --min-epochs or use --pruner none"
        )
    return fields


def study_pruner(given: dict, stored: dict | None, max_epochs: int, exp_key: str) -> dict:
    """The study's pruner: a new study takes ``given`` over the defaults; a resumed one keeps
    the rule it was launched with (``stored``), and refuses flags that contradict it."""
    from shared.training.pruning import PrunerConfig

    if stored is None:
        return PrunerConfig(**{**given, "max_epochs": max_epochs}).to_dict()
    kept = PrunerConfig.from_dict(stored).to_dict()
    clash = [k for k, v in given.items() if kept[k] != v]
    if clash:
        flags = {field: "--" + name.replace("_", "-") for name, field in PRUNER_SETTINGS.items()}
        was = " ".join(f"{flags[k]} {kept[k]}" for k in PRUNER_SETTINGS.values())
        raise ConfigError(
            f"study {exp_key} was launched with {was}; a resumed study keeps its pruner, so "
            f"that every trial is judged by one rule: drop {', '.join(flags[k] for k in clash)}"
            " or start a new study with another --exp-key"
        )
    return {**kept, "max_epochs": max_epochs}


def stored_pruner(store: Store, exp_key: str) -> dict | None:
    """The pruner stamped on the study's jobs; ``{}`` (no pruning) for a study posted
    before Strix pruned, None for a new study."""
    docs = store.trials_in(exp_key, fields=["strix"], limit=1)
    return (docs[0].get("strix") or {}).get("pruner", {}) if docs else None


def _check_sources(cfg: LaunchConfig) -> None:
    """Bad data settings, a broken --data-dir and a malformed URI fail now, not after a
    minute of TensorFlow start-up and MongoDB time-outs."""
    from shared.data.idx import find_data_dir

    data_spec(cfg)
    backend.select(cfg.backend)  # installed? (the workers select it again in their process)
    if cfg.data_dir is not None:
        find_data_dir(cfg.data_dir)
    if cfg.mongo is not None:
        from shared.store import parse_target

        parse_target(cfg.mongo, cfg.db)


def data_spec(cfg: LaunchConfig) -> DataSpec:
    from shared.data.spec import DataSpec

    seed = defaults.SPLIT_SEED if cfg.seed is None else cfg.seed
    return DataSpec(
        image_size=cfg.image_size,
        channels=cfg.channels,
        interpolation=cfg.interpolation,
        limit=cfg.limit,
        seed=seed,
    )


def _cacheable(info: catalog.Entry, args: argparse.Namespace) -> bool:
    """Decided when the study is posted and stamped on every job: a model with a frozen
    base (catalog) and no augmentation trains on cached features."""
    if args.feature_cache == "off" or info.base_layer is None or args.augment:
        return False
    return not info.name.startswith("mobilenet")  # MobileNet fine-tunes its base (seed 003)


def _resource(info: catalog.Entry, args: argparse.Namespace) -> str:
    """A cached trial costs what its head costs: it shares a GPU like ConvStrix."""
    return "light" if _cacheable(info, args) else info.resource


def make_study(cfg: LaunchConfig, store: Store, source: dict, pruner: dict) -> Study:
    from coordinator.study.limits import StudyLimits
    from coordinator.study.study import Study
    from shared.spaces import SPACES
    from shared.training.jobs import keras_space, objective

    params = SPACES[cfg.model](image_size=cfg.image_size, clamp=cfg.clamp, augment=cfg.augment)
    budget = {"max_epochs": cfg.max_epochs, "patience": cfg.patience, "monitor": cfg.monitor}
    space = keras_space(
        cfg.model,
        params,
        data_spec(cfg).to_dict(),
        budget,
        seed=cfg.seed,
        weights=cfg.weights,
        tb_dir=cfg.tb_dir,
        pruner=pruner,
        feature_cache=cfg.feature_cache,
    )
    timeout_s = None if cfg.timeout_min is None else 60.0 * cfg.timeout_min
    return Study(
        store,
        cfg.exp_key,
        objective,
        space,
        cfg.max_evals,
        algo=cfg.algo,
        max_queue_len=cfg.max_queue_len,
        resource=cfg.resource,
        meta={
            "model": cfg.model,
            "data_source": source,
            "pruner": pruner,
            "feature_cache": cfg.feature_cache,
        },
        seed=cfg.seed,
        limits=StudyLimits(stop_after=cfg.stop_after, timeout_s=timeout_s),
    )


def worker_args(cfg: LaunchConfig, data_dir: str | None) -> list[str]:
    """A local worker's command line: no --mongo (``ps`` shows it; the URI goes in the
    environment), and the directories this study's --tb-dir and --weights file lie in."""
    args = ["--exp-key", cfg.exp_key] + (["--db", cfg.db] if cfg.db else [])
    args += ["--heartbeat", str(cfg.heartbeat), "--max-attempts", str(cfg.max_attempts)]
    args += ["--home", str(cfg.home), "--backend", cfg.backend, "--precision", cfg.precision]
    weights_file = cfg.weights not in (None, "imagenet")
    weights_dir = cfg.weights_dir or (str(Path(cfg.weights).parent) if weights_file else None)
    for flag, value in (
        ("--data-dir", data_dir),
        ("--cache-dir", cfg.cache_dir),
        ("--weights-dir", weights_dir),
        ("--workdir", cfg.tb_dir),
        ("--gpu-capacity", cfg.gpu_capacity),
    ):
        if value is not None:
            args += [flag, str(value)]
    return args


def run(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    from coordinator.study import study as study_mod
    from coordinator.study.datasource import study_source
    from coordinator.study.local import embedded_or_running
    from coordinator.study.summary import format_table, top_trials
    from shared.data.spec import small_validation_note
    from shared.store import connect

    with ExitStack() as stack:
        url = cfg.mongo or embedded_or_running(cfg.home, stack)
        store = connect(url, cfg.db)
        stack.callback(store.close)
        store.create_indexes()
        source = study_source(store, cfg.exp_key, cfg.data_dir)
        stored = stored_pruner(store, cfg.exp_key)
        pruner = study_pruner(cfg.pruner, stored, cfg.max_epochs, cfg.exp_key)
        log.info(
            "study %s on %s: %d trials of %s, pruner %s",
            cfg.exp_key,
            store.target.redacted,
            cfg.max_evals,
            cfg.model,
            pruner["kind"],
        )
        if note := small_validation_note(data_spec(cfg)):
            log.warning("%s", note)
        workers = None
        if cfg.local_workers:
            workers = local_workers(cfg, url, source.get("dir"))
            stack.callback(workers.stop)
            workers.start()
        stopped = study_mod.run(
            make_study(cfg, store, source, pruner),
            grace=defaults.GRACE_FACTOR * cfg.heartbeat,
            max_attempts=cfg.max_attempts,
            on_tick=workers.check if workers else None,
            progress=cfg.progress,
        )
        print("\n" + study_mod.closing_text(store, cfg.exp_key, stopped))
        print(format_table(top_trials(store, cfg.exp_key, 10)))
    return 0


def local_workers(cfg: LaunchConfig, url: str, data_dir: str | None, prepare: bool = True) -> Any:
    """The study's local workers, not yet started; the URI goes in their environment."""
    from coordinator.study.local import LocalWorkers
    from shared.data.cache import prepare as prepare_data

    if prepare:
        prepare_data(
            data_spec(cfg), data_dir=data_dir, cache_dir=cfg.cache_dir, progress=cfg.progress
        )
    logs = cfg.home / "logs" / cfg.exp_key
    print(f"worker logs: {logs}")
    env = {defaults.ENV_MONGO: url}
    return LocalWorkers(cfg.local_workers, worker_args(cfg, data_dir), logs, env)


def main(argv: list[str] | None = None) -> int:
    interrupted = "interrupted: trials stay in MongoDB; run the same command to resume"
    return cli.main(PROG, build_parser, run, argv, interrupted=interrupted)


if __name__ == "__main__":
    raise SystemExit(main())
