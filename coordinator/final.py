"""``python -m coordinator.final``: retrain a study's best trial and measure it on the test set.

The seed's last step ("I did not use early stopping when doing a final run with the best
parameters"). The best params are trained on the training **and** validation images:
model selection is over, so the validation split has nothing left to decide
(``--train-only`` keeps it out). Without early stopping the length is fixed in advance:
the epoch early stopping restored in the best trial (``result.best_epoch``). The test
split was never seen by any trial, so its accuracy is an honest estimate. The ``.keras``
export has rescaling and augmentation inside (``predict(uint8_images)`` works) and is
stored in GridFS with its provenance, for ``--fetch`` from anywhere (docs/results.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.results import add_store_args, open_store
from shared import __version__, defaults, settings
from shared.errors import ConfigError, StrixError
from shared.store import JOB_STATE_DONE, Store
from shared.store import exports as stored

if TYPE_CHECKING:  # TensorFlow loads only when a model is trained
    import keras
    import numpy as np

    from shared.data import Dataset

log = logging.getLogger("coordinator.final")

MODEL_NAME = "final"
PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "hyperopt", "pymongo", "matplotlib")

EXAMPLES = """
examples:
  # retrain the best trial on train+val, report on the test set, store the model
  python -m coordinator.final --exp-key convstrix-128px
  # a quick check: 2 epochs, 2000 training and 1000 test images, outputs in ./final
  python -m coordinator.final --exp-key convstrix-128px --epochs 2 --limit 2000 \\
      --test-limit 1000 --out ./final
  # fetch the stored model on another machine
  python -m coordinator.final --exp-key convstrix-128px --fetch convstrix.keras \\
      --mongo mongodb://strix:***@db:27017/?authSource=admin
"""


@dataclass(frozen=True)
class FinalConfig:
    exp_key: str
    epochs: int | None
    out: Path
    data_dir: str | None
    cache_dir: str | None
    limit: int | None
    test_limit: int | None
    train_only: bool
    seed: int | None
    store_model: bool
    weights_dir: str | None = None


# --- the best trial ----------------------------------------------------------------------


def best_trial(store: Store, exp_key: str) -> dict:
    """The finished trial with the lowest loss, with its full document."""
    docs = store.find_jobs(
        {"exp_key": exp_key, "state": JOB_STATE_DONE, "result.status": "ok"},
        projection=["tid", "result", "spec", "misc"],
    )
    docs = [d for d in docs if (d.get("result") or {}).get("loss") is not None]
    if not docs:
        counts = store.counts(exp_key)
        if not any(counts.values()):
            raise ConfigError(
                f"study {exp_key!r} has no trials in {store.target.redacted}; known studies: "
                f"{', '.join(store.exp_keys()) or 'none'} (check --exp-key, --mongo and --db)"
            )
        raise ConfigError(
            f"study {exp_key!r} has no successful trial yet (counts: {counts}); wait for "
            f"trials to finish (`python -m coordinator.results --exp-key {exp_key}`)"
        )
    best = min(docs, key=lambda d: d["result"]["loss"])
    if not isinstance(best.get("spec"), dict) or "params" not in best["spec"]:
        raise ConfigError(
            f"trial {best.get('tid')} of {exp_key!r} has no `spec` (it was run by a stock "
            "hyperopt worker, not a Strix worker), so its params cannot be retrained"
        )
    return best


def default_epochs(trial: dict) -> int:
    """The epoch early stopping restored in the trial; else all it ran; else its budget."""
    result = trial.get("result") or {}
    budget = (trial["spec"].get("budget") or {}).get("max_epochs")
    for value in (result.get("best_epoch"), result.get("epochs"), budget):
        if isinstance(value, int | float) and value >= 1:
            return int(value)
    return defaults.MAX_EPOCHS


def data_spec_for(trial: dict, cfg: FinalConfig) -> Any:
    """The study's own data settings, with the quick-run overrides applied."""
    from shared.data import DataSpec

    spec = DataSpec.from_dict(dict(trial["spec"].get("data") or {}))
    if cfg.limit is not None:
        spec = replace(spec, limit=cfg.limit)
    if cfg.test_limit is not None:
        spec = replace(spec, test_limit=cfg.test_limit)
    return spec


def training_split(data: Dataset, train_only: bool) -> Dataset:
    """train+val as one training set (a copy in memory), or train alone."""
    import numpy as np

    if train_only:
        return data
    return replace(
        data,
        x_train=np.concatenate([data.x_train, data.x_val]),
        y_train=np.concatenate([data.y_train, data.y_val]),
    )


# --- training and evaluation -------------------------------------------------------------


def retrain(
    trial: dict, data: Dataset, epochs: int, seed: int | None, weights_dir: str | None = None
) -> tuple[Any, dict, float]:
    """Fit the trial's params for exactly ``epochs`` epochs, no early stopping, no validation."""
    from shared.jobs import resolve_weights
    from shared.training import diverged, train

    spec = trial["spec"]
    started = time.perf_counter()
    model, history = train(
        spec["model"],
        spec["params"],
        data=data,
        epochs=epochs,
        early_stopping=False,
        validation=False,
        seed=seed,
        weights=resolve_weights(spec["model"], spec.get("weights"), weights_dir),
        verbose=2,
    )
    reason = diverged(history)
    if reason is not None:
        raise ConfigError(f"the final retrain of trial {trial.get('tid')} failed: {reason}")
    return model, history, time.perf_counter() - started


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict:
    """Predictions on the test images and sklearn's per-class report (seed: digits=3)."""
    import numpy as np
    from sklearn.metrics import classification_report, confusion_matrix

    from shared.data import CLASS_NAMES

    probs = model.predict(np.asarray(x), batch_size=256, verbose=0)
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(CLASS_NAMES)))
    kw = {"labels": labels, "target_names": list(CLASS_NAMES), "zero_division": 0}
    return {
        "text": classification_report(y, y_pred, digits=3, **kw),
        "report": classification_report(y, y_pred, output_dict=True, **kw),
        "confusion": confusion_matrix(y, y_pred, labels=labels),
        "accuracy": float(np.mean(y_pred == np.asarray(y))),
    }


def save_confusion(confusion: np.ndarray, path: Path, title: str) -> Path:
    import numpy as np

    from coordinator.report import pyplot
    from shared.data import CLASS_NAMES

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 7))
    image = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(len(CLASS_NAMES))
    ax.set_xticks(ticks, CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(ticks, CLASS_NAMES)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    limit = confusion.max() / 2 if confusion.size else 0
    for (i, j), n in np.ndenumerate(confusion):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > limit else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def export_model(model: keras.Model, path: Path) -> bytes:
    """Save an uncompiled copy as .keras: no optimizer state (it would triple the size and
    warn on every load), so it is for inference; compile it again to fine-tune."""
    import keras

    copy = keras.Model.from_config(model.get_config())  # clone_model would keep compile
    copy.set_weights(model.get_weights())
    copy.save(path)
    return path.read_bytes()


# --- provenance --------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "strix": __version__}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def gpu_name() -> str | None:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return str(details.get("device_name") or gpus[0].name)


def per_class(report: dict) -> dict[str, dict[str, float]]:
    from shared.data import CLASS_NAMES

    keys = {"precision": "precision", "recall": "recall", "f1": "f1-score", "support": "support"}
    return {name: {k: float(report[name][v]) for k, v in keys.items()} for name in CLASS_NAMES}


def provenance(trial: dict, data: Dataset, run: dict, blob: bytes) -> dict:
    """Everything needed to trust, reproduce or compare this model."""
    spec = trial["spec"]
    classes = per_class(run["eval"]["report"])
    return {
        "exp_key": trial.get("exp_key") or run["exp_key"],
        "tid": trial.get("tid"),
        "model": spec["model"],
        "params": spec["params"],
        "weights": spec.get("weights"),
        "trial": {k: trial["result"].get(k) for k in ("loss", "val_accuracy", "best_epoch")},
        "seeds": {"training": run["seed"], "split": data.spec.seed, "study": spec.get("seed")},
        "data": {**data.spec.to_dict(), "source_hash": data.source_hash},
        "image_size": data.spec.image_size,
        "trained_on": "train" if run["train_only"] else "train+val",
        "n_train": run["n_train"],
        "n_test": len(data.y_test),
        "epochs": run["epochs"],
        "train_seconds": round(run["seconds"], 2),
        "history": run["history"],
        "test_accuracy": run["eval"]["accuracy"],
        "macro_f1": float(run["eval"]["report"]["macro avg"]["f1-score"]),
        "per_class": classes,
        "f1": {name: c["f1"] for name, c in classes.items()},
        "versions": package_versions(),
        "gpu": gpu_name(),
        "host": socket.gethostname(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model_sha256": hashlib.sha256(blob).hexdigest(),
        "model_bytes": len(blob),
    }


# --- the command -------------------------------------------------------------------------


def run_final(store: Store, cfg: FinalConfig) -> dict:
    from shared.data import load

    trial = best_trial(store, cfg.exp_key)
    data = load(data_spec_for(trial, cfg), data_dir=cfg.data_dir, cache_dir=cfg.cache_dir)
    epochs = cfg.epochs or default_epochs(trial)
    seed = cfg.seed if cfg.seed is not None else trial["spec"].get("seed")
    fit = training_split(data, cfg.train_only)
    what = "train" if cfg.train_only else "train+val"
    log.info("retraining trial %s for %d epoch(s) on %s", trial.get("tid"), epochs, what)
    print(f"trial {trial.get('tid')}: {epochs} epoch(s) on {len(fit.y_train)} {what} images")
    model, history, seconds = retrain(trial, fit, epochs, seed, cfg.weights_dir)
    result = evaluate(model, data.x_test, data.y_test)
    cfg.out.mkdir(parents=True, exist_ok=True)
    blob = export_model(model, cfg.out / "model.keras")
    run = {"exp_key": cfg.exp_key, "seed": seed, "train_only": cfg.train_only, "eval": result}
    run.update(n_train=len(fit.y_train), epochs=epochs, seconds=seconds, history=history)
    prov = provenance(trial, data, run, blob)
    _write_outputs(cfg, trial, result, prov)
    if cfg.store_model:
        file_id = stored.store_model(store.db, cfg.exp_key, MODEL_NAME, blob, prov)
        prov["stored"] = {"bucket": stored.BUCKET, "file_id": str(file_id)}
    (cfg.out / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))
    return {"provenance": prov, "report": result["text"]}


def _write_outputs(cfg: FinalConfig, trial: dict, result: dict, prov: dict) -> None:
    title = f"{cfg.exp_key} trial {trial.get('tid')}: test accuracy {result['accuracy']:.3f}"
    save_confusion(result["confusion"], cfg.out / "confusion_matrix.png", title)
    (cfg.out / "classification_report.txt").write_text(result["text"])
    print(f"\n{title} ({prov['n_test']} test images)\n")
    print(result["text"])
    print(f"outputs in {cfg.out}: model.keras, confusion_matrix.png, provenance.json")


def fetch(store: Store, exp_key: str, path: Path) -> dict:
    """Write the study's stored model to ``path`` and its provenance beside it."""
    if path.suffix != ".keras":
        raise ConfigError(f"--fetch {path}: keras loads only files named *.keras; use e.g. x.keras")
    blob, metadata = stored.fetch_model(store.db, exp_key, MODEL_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    prov = metadata.get("provenance") or {}
    path.with_suffix(".provenance.json").write_text(json.dumps(prov, indent=2, default=str))
    print(
        f"fetched {exp_key}/{MODEL_NAME} ({len(blob)} bytes, trial {prov.get('tid')}, "
        f"test accuracy {prov.get('test_accuracy')}, created {prov.get('created')}) to {path}"
    )
    return metadata


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m coordinator.final",
        description="Retrain a study's best trial without early stopping and test it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--exp-key", required=True, help="the study whose best trial is retrained")
    add_store_args(p)
    a("--epochs", type=int, help="epochs (default: the best trial's restored epoch)")
    a("--out", type=Path, help="output folder (default $STRIX_HOME/final/<exp-key>)")
    a("--data-dir", help=f"Fashion-MNIST idx directory (env {defaults.ENV_DATA_DIR})")
    a("--cache-dir", help=f"prepared-data cache (env {defaults.ENV_CACHE_DIR})")
    a("--limit", type=int, help="train on a stratified subset of N images (quick runs)")
    a("--test-limit", type=int, help="test on a stratified subset of N images (quick runs)")
    a("--train-only", action="store_true", help="leave the validation images out of training")
    a("--seed", type=int, help="training seed (default: the study's)")
    a("--no-store", action="store_true", help="do not store the model in MongoDB")
    a("--fetch", type=Path, metavar="OUT.keras", help="only fetch the stored model to a file")
    a("-v", "--verbose", action="store_true", help="debug logging")
    return p


def resolve(args: argparse.Namespace) -> FinalConfig:
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.exp_key)
    v = settings.resolve(args, ["data_dir", "cache_dir", "weights_dir", "home"])
    home = Path(v["home"]).expanduser()
    return FinalConfig(
        exp_key=args.exp_key,
        epochs=args.epochs,
        out=args.out or home / "final" / safe,
        data_dir=v["data_dir"],
        cache_dir=v["cache_dir"] or str(home / "cache"),
        weights_dir=v["weights_dir"],
        limit=args.limit,
        test_limit=args.test_limit,
        train_only=args.train_only,
        seed=args.seed,
        store_model=not args.no_store,
    )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = resolve(args)
        store = open_store(args)
        try:
            if args.fetch is not None:
                fetch(store, cfg.exp_key, args.fetch)
            else:
                run_final(store, cfg)
        finally:
            store.close()
        return 0
    except StrixError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was stored", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
