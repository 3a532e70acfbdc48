"""``strix train`` (``python -m coordinator.train``): train one configuration, no study.

A published row ("the simple CNN without augmentation: 92.52 %") or "train this
configuration again" is one command. It goes through a trial's own objective
(:func:`shared.training.loop.run_trial`: early stopping, the kept weights, ``loss = 1 - val
accuracy``) on the same data pipeline, then the final retrain's test report, ``.keras``
export and provenance (:mod:`coordinator.analysis.evaluation`). Nothing touches MongoDB.

``--set key=value`` takes the model's params and the training keys (``learning_rate``,
``batch_size``, ``optimizer``, ``lr_decay``); values are read as JSON, else as text.
Everything the run measured lands in ``OUT/result.json`` (what ``bench/reproduce.py`` reads).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared import catalog
from shared.config import cli, defaults, settings
from shared.errors import ConfigError
from shared.training.schedules import check_lr_decay

if TYPE_CHECKING:
    import keras

    from shared.data.cache import Dataset

log = logging.getLogger("coordinator.train")

PROG = "strix train"
DATA_SETTINGS = ["data_dir", "cache_dir", "weights_dir", "home", "monitor"]

EXAMPLES = """
  # seed 003, Table 2: the simple CNN without augmentation (paper: 92.52 %)
  strix train --model simplecnn --seed 0
  # ... with flips and rotations, 3 seeds' worth of runs in ./runs
  strix train --model simplecnn --set aug_flip=0.5 --set aug_rotate=0.2 --seed 1 --out runs/r1
  # MobileNet at 56 px, the paper's schedule: lr 0.0003, x0.8 per epoch
  strix train --model mobilenet --set learning_rate=0.0003 --lr-decay 0.8
  # seed 004's best row, early stopping on val accuracy, a quick 2000-image check
  strix train --model acosta --set filters=64 --set hidden_units=1024 \\
      --monitor val_accuracy --limit 2000 --test-limit 1000 --epochs 2
"""


@dataclass(frozen=True)
class TrainConfig:
    model: str
    params: dict[str, Any]
    image_size: int
    epochs: int
    patience: int
    monitor: str
    seed: int | None
    limit: int | None
    test_limit: int | None
    out: Path
    data_dir: str | None
    cache_dir: str
    weights_dir: str | None
    weights: str | None = field(default=None)


# --- flags ---------------------------------------------------------------------------------


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; JSON values (``0.5``, ``64``, ``true``), else the text."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set dropout_rate=0.3")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params[key.strip()] = value
    return params


def build_parser() -> argparse.ArgumentParser:
    description = (
        "Train one configuration of a model without a study: a trial's objective (early "
        "stopping, the kept weights), then the test report and .keras export of "
        "`strix final`. Models: " + ", ".join(catalog.NAMES) + "."
    )
    p = cli.new_parser(PROG, description, EXAMPLES)
    a = p.add_argument
    a("--model", required=True, choices=catalog.NAMES, metavar="MODEL", help="the model")
    a(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="sets",
        help="a param or training key (repeatable); the rest keep the model's defaults",
    )
    a("--image-size", type=int, help="input side in px (default: the model's, e.g. 28)")
    a("--epochs", type=int, default=defaults.MAX_EPOCHS, help="most epochs")
    a("--patience", type=int, default=defaults.PATIENCE, help="early-stopping patience")
    a("--lr-decay", type=float, help="multiply the learning rate by this after every epoch")
    a("--seed", type=int, help="training seed (weights, shuffling)")
    a("--limit", type=int, help="train+val on a stratified subset of N images (quick runs)")
    a("--test-limit", type=int, help="test on a stratified subset of N images (quick runs)")
    a("--out", type=Path, help="output folder (default: <home>/train/<model>)")
    settings.add(p, *DATA_SETTINGS)
    return p


def resolve(args: argparse.Namespace) -> TrainConfig:
    """Every flag error now, before TensorFlow is imported."""
    from shared.data.spec import DataSpec

    params = parse_sets(args.sets)
    if args.lr_decay is not None:
        params["lr_decay"] = args.lr_decay
    check_lr_decay(params.get("lr_decay"))
    catalog.check_params(args.model, list(params))
    entry = catalog.entry(args.model)
    size = args.image_size or entry.image_size
    catalog.check_size(args.model, size)
    for flag, value in (("--epochs", args.epochs), ("--patience", args.patience)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed must be in [0, 2**32), got {args.seed}")
    DataSpec(image_size=size, limit=args.limit, test_limit=args.test_limit)
    v = settings.resolve(args, DATA_SETTINGS)
    home = Path(v["home"]).expanduser()
    return TrainConfig(
        model=args.model,
        params=params,
        image_size=size,
        epochs=args.epochs,
        patience=args.patience,
        monitor=v["monitor"],
        seed=args.seed,
        limit=args.limit,
        test_limit=args.test_limit,
        out=args.out or home / "train" / args.model,
        data_dir=v["data_dir"],
        cache_dir=v["cache_dir"],
        weights_dir=v["weights_dir"],
        weights="imagenet" if entry.weights_file else None,
    )


# --- the run -------------------------------------------------------------------------------


def load_data(cfg: TrainConfig) -> Dataset:
    from shared.data.cache import load
    from shared.data.spec import DataSpec

    spec = DataSpec(
        image_size=cfg.image_size,
        channels=catalog.entry(cfg.model).channels,
        limit=cfg.limit,
        test_limit=cfg.test_limit,
    )
    return load(spec, data_dir=cfg.data_dir, cache_dir=cfg.cache_dir)


class _Tester:
    """``run_trial``'s ``on_model``: tests and exports the kept weights before they go."""

    def __init__(self, data: Dataset, out: Path) -> None:
        self.data, self.out = data, out
        self.eval: dict | None = None
        self.blob = b""

    def __call__(self, model: keras.Model) -> None:
        from coordinator.analysis.evaluation import evaluate, export_model

        self.eval = evaluate(model, self.data.x_test, self.data.y_test)
        self.blob = export_model(model, self.out / "model.keras")


def train_once(cfg: TrainConfig) -> dict:
    """Train, test, export; returns (and writes) ``result.json``'s content."""
    from shared.training.jobs import resolve_weights
    from shared.training.loop import Budget, run_trial

    data = load_data(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    tester = _Tester(data, cfg.out)
    n = len(data.y_train)
    print(f"{cfg.model} at {cfg.image_size}px: {n} train, {len(data.y_val)} val images")
    result = run_trial(
        cfg.model,
        cfg.params,
        data=data,
        budget=Budget(max_epochs=cfg.epochs, patience=cfg.patience, monitor=cfg.monitor),
        seed=cfg.seed,
        weights=resolve_weights(cfg.model, cfg.weights, cfg.weights_dir),
        verbose=2,
        on_model=tester,
    )
    if result.get("status") != "ok" or tester.eval is None:
        raise ConfigError(f"{cfg.model} with {cfg.params} failed: {result.get('reason')}")
    return _write(cfg, data, result, tester)


def _write(cfg: TrainConfig, data: Dataset, result: dict, tester: _Tester) -> dict:
    from coordinator.analysis import plots
    from coordinator.analysis.evaluation import provenance

    assert tester.eval is not None
    trial = {
        "exp_key": None,
        "tid": None,
        "spec": {"model": cfg.model, "params": cfg.params, "weights": cfg.weights},
        "result": result,
    }
    run = {"exp_key": None, "seed": cfg.seed, "train_only": True, "eval": tester.eval}
    run.update(n_train=len(data.y_train), epochs=result["epochs"], data_dir=cfg.data_dir)
    run.update(seconds=result["train_seconds"], history=result["history"])
    prov = provenance(trial, data, run, tester.blob)
    prov.update(command="train", monitor=cfg.monitor, max_epochs=cfg.epochs)
    prov["seconds_per_epoch"] = result["train_seconds"] / max(result["epochs"], 1)
    prov["trial"] = {k: result.get(k) for k in ("loss", "val_accuracy", "best_epoch")}
    prov["trial"]["max_val_accuracy"] = result.get("max_val_accuracy")
    prov["params_count"] = result.get("params_count")
    title = f"{cfg.model}: test accuracy {tester.eval['accuracy']:.4f}"
    plots.save(plots.confusion(tester.eval["confusion"], title), cfg.out / "confusion_matrix.png")
    (cfg.out / "classification_report.txt").write_text(tester.eval["text"])
    (cfg.out / "result.json").write_text(json.dumps(prov, indent=2, default=str))
    print(
        f"\n{title} ({prov['n_test']} test images); kept epoch {result['best_epoch']} of "
        f"{result['epochs']} by {cfg.monitor}, val accuracy {result['val_accuracy']:.4f}\n"
    )
    print(tester.eval["text"])
    print(f"outputs in {cfg.out}: model.keras, result.json, confusion_matrix.png")
    return prov


def run(args: argparse.Namespace) -> int:
    from coordinator.analysis.finished import check_out_dir

    cfg = resolve(args)
    check_out_dir(cfg.out, "--out")
    train_once(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(PROG, build_parser, run, argv, interrupted="interrupted: nothing was kept")


if __name__ == "__main__":
    raise SystemExit(main())
