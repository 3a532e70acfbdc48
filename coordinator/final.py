"""``strix final`` (``python -m coordinator.final``): retrain a study's best trial and
measure it on the test set.

The seed's last step ("I did not use early stopping when doing a final run with the best
parameters"). The best params are trained on the training **and** validation images:
model selection is over, so the validation split has nothing left to decide
(``--train-only`` keeps it out). Without early stopping the length is fixed in advance:
the epoch early stopping restored in the best trial (``result.best_epoch``). The data is
the study's own (its recorded directory unless ``--data-dir`` says otherwise). The
``.keras`` export is stored in GridFS with its provenance, for ``--fetch`` from anywhere
(docs/results.md). Every flag is checked before MongoDB is contacted or TensorFlow loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.analysis.finished import check_out_dir, check_store_flags, no_success, safe_name
from coordinator.study.stores import open_store
from shared.config import cli, defaults, settings
from shared.errors import ConfigError
from shared.store import Store
from shared.store import exports as stored
from shared.training import backend

if TYPE_CHECKING:  # numpy and TensorFlow load only when a model is trained
    from shared.data.cache import Dataset
    from shared.data.spec import DataSpec

log = logging.getLogger("coordinator.final")

PROG = "strix final"
MODEL_NAME = "final"
TRIAL_FIELDS = ["tid", "exp_key", "result", "spec", "misc"]
DATA_SETTINGS = ["data_dir", "cache_dir", "weights_dir", "home", "backend", "precision"]

EXAMPLES = """
  # retrain the best trial on train+val, report on the test set, store the model
  strix final --exp-key convstrix-128px
  # a quick check: 2 epochs, 2000 training and 1000 test images, outputs in ./final
  strix final --exp-key convstrix-128px --epochs 2 --limit 2000 --test-limit 1000 --out ./final
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
    fetch: Path | None = None
    backend: str = "tensorflow"
    precision: str = "float32"


# --- the best trial ----------------------------------------------------------------------


def best_trial(store: Store, exp_key: str) -> dict:
    """The finished trial with the lowest loss, with its full document."""
    docs = store.best(exp_key, 1, fields=TRIAL_FIELDS)
    if not docs:
        raise no_success(store, exp_key)
    best = docs[0]
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


def data_spec_for(trial: dict, cfg: FinalConfig) -> DataSpec:
    """The study's own data settings, with the quick-run overrides applied."""
    from shared.data.spec import DataSpec

    spec = DataSpec.from_dict(dict(trial["spec"].get("data") or {}))
    if cfg.limit is not None:
        spec = replace(spec, limit=cfg.limit)
    if cfg.test_limit is not None:
        spec = replace(spec, test_limit=cfg.test_limit)
    return spec


def study_data(store: Store, trial: dict, cfg: FinalConfig) -> tuple[Dataset, dict]:
    """The study's data: ``--data-dir``, else its recorded copy, else the library's
    search; a copy that hashes differently from the study's record is said so."""
    from coordinator.analysis.finished import changed_source, choose_data_dir
    from coordinator.study.datasource import recorded_source
    from shared.data.cache import load

    recorded = recorded_source(store, cfg.exp_key)
    data_dir = choose_data_dir(cfg.data_dir, recorded, cfg.exp_key)
    data = load(data_spec_for(trial, cfg), data_dir=data_dir, cache_dir=cfg.cache_dir)
    changed = changed_source(recorded, data.source_hash, data_dir or "the data found")
    if changed:
        log.warning("study %s: %s", cfg.exp_key, changed)
    return data, {"data_dir": data_dir, "recorded_source": recorded}


# --- training ----------------------------------------------------------------------------


def retrain(
    trial: dict, data: Dataset, epochs: int, seed: int | None, cfg: FinalConfig
) -> tuple[Any, dict, float]:
    """Fit the trial's params for exactly ``epochs`` epochs, no early stopping, no validation;
    on cached base outputs when the study's trials trained on them (the exported model then
    carries the cached base)."""
    from shared.data.features import why_not
    from shared.spaces import flatten
    from shared.training.jobs import resolve_weights
    from shared.training.loop import diverged, train

    spec = trial["spec"]
    cached = spec.get("feature_cache") and why_not(spec["model"], flatten(spec["params"])) is None
    started = time.perf_counter()
    model, history = train(
        spec["model"],
        spec["params"],
        data=data,
        epochs=epochs,
        early_stopping=False,
        validation=False,
        seed=seed,
        weights=resolve_weights(spec["model"], spec.get("weights"), cfg.weights_dir),
        verbose=2,
        feature_cache=cfg.cache_dir if cached else None,
        merge_val=not cfg.train_only,
    )
    reason = diverged(history)
    if reason is not None:
        raise ConfigError(f"the final retrain of trial {trial.get('tid')} failed: {reason}")
    return model, history, time.perf_counter() - started


def run_final(store: Store, cfg: FinalConfig) -> dict:
    from coordinator.analysis.evaluation import evaluate, export_model, provenance

    trial = best_trial(store, cfg.exp_key)
    backend.set_precision(cfg.precision)
    data, run = study_data(store, trial, cfg)
    epochs = cfg.epochs or default_epochs(trial)
    seed = cfg.seed if cfg.seed is not None else trial["spec"].get("seed")
    n_train = len(data.y_train) + (0 if cfg.train_only else len(data.y_val))
    what = "train" if cfg.train_only else "train+val"
    log.info("retraining trial %s for %d epoch(s) on %s", trial.get("tid"), epochs, what)
    print(f"trial {trial.get('tid')}: {epochs} epoch(s) on {n_train} {what} images")
    model, history, seconds = retrain(trial, data, epochs, seed, cfg)
    result = evaluate(model, data.x_test, data.y_test)
    cfg.out.mkdir(parents=True, exist_ok=True)
    blob = export_model(model, cfg.out / "model.keras")
    run.update(exp_key=cfg.exp_key, seed=seed, train_only=cfg.train_only, eval=result)
    run.update(n_train=n_train, epochs=epochs, seconds=seconds, history=history)
    prov = provenance(trial, data, run, blob)
    _write_outputs(cfg, trial, result, prov)
    if cfg.store_model:
        file_id = stored.store_model(store.db, cfg.exp_key, MODEL_NAME, blob, prov)
        prov["stored"] = {"bucket": stored.BUCKET, "file_id": str(file_id)}
    (cfg.out / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))
    return {"provenance": prov, "report": result["text"]}


def _write_outputs(cfg: FinalConfig, trial: dict, result: dict, prov: dict) -> None:
    from coordinator.analysis import plots

    title = f"{cfg.exp_key} trial {trial.get('tid')}: test accuracy {result['accuracy']:.3f}"
    plots.save(plots.confusion(result["confusion"], title), cfg.out / "confusion_matrix.png")
    (cfg.out / "classification_report.txt").write_text(result["text"])
    print(f"\n{title} ({prov['n_test']} test images)\n")
    print(result["text"])
    if prov["data_source"]["changed"]:
        print("note: the data differs from the study's; see the warning above\n")
    print(f"outputs in {cfg.out}: model.keras, confusion_matrix.png, provenance.json")


def fetch(store: Store, exp_key: str, path: Path) -> dict:
    """Write the study's stored model to ``path`` and its provenance beside it."""
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


# --- the command -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    description = (
        "Retrain a study's best trial without early stopping and test it. Without "
        "--data-dir the data is the copy the study recorded, while it still exists."
    )
    p = cli.new_parser(PROG, description, EXAMPLES, store=True)
    a = p.add_argument
    a("--exp-key", required=True, help="the study whose best trial is retrained")
    a("--epochs", type=int, help="epochs (default: the best trial's restored epoch)")
    a("--out", type=Path, help="output folder (default: <home>/final/<exp-key>)")
    a("--limit", type=int, help="train on a stratified subset of N images (quick runs)")
    a("--test-limit", type=int, help="test on a stratified subset of N images (quick runs)")
    a("--train-only", action="store_true", help="leave the validation images out of training")
    a("--seed", type=int, help="training seed (default: the study's)")
    a("--no-store", action="store_true", help="do not store the model in MongoDB")
    a("--fetch", type=Path, metavar="OUT.keras", help="only fetch the stored model to a file")
    settings.add(p, *DATA_SETTINGS)
    return p


def _check(args: argparse.Namespace) -> None:
    """Every flag error now: before MongoDB is contacted or TensorFlow imported."""
    from shared.data.spec import DataSpec

    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed must be in [0, 2**32), got {args.seed}")
    if args.fetch is not None and args.fetch.suffix != ".keras":
        raise ConfigError(
            f"--fetch {args.fetch}: keras loads only files named *.keras; use e.g. x.keras"
        )
    try:
        DataSpec(limit=args.limit, test_limit=args.test_limit)
    except ConfigError as e:  # DataSpec names its fields; the user typed flags
        flag = "--test-limit" if str(e).startswith("test_limit") else "--limit"
        raise ConfigError(flag + str(e).removeprefix("test_limit").removeprefix("limit")) from None
    check_store_flags(args)


def resolve(args: argparse.Namespace) -> FinalConfig:
    _check(args)
    v = settings.resolve(args, DATA_SETTINGS)
    home = Path(v["home"]).expanduser()
    if v["data_dir"] is not None:
        from shared.data.idx import find_data_dir

        find_data_dir(v["data_dir"])  # a missing or incomplete copy fails now
    return FinalConfig(
        exp_key=args.exp_key,
        epochs=args.epochs,
        out=args.out or home / "final" / safe_name(args.exp_key),
        data_dir=v["data_dir"],
        cache_dir=v["cache_dir"],
        weights_dir=v["weights_dir"],
        limit=args.limit,
        test_limit=args.test_limit,
        train_only=args.train_only,
        seed=args.seed,
        store_model=not args.no_store,
        fetch=args.fetch,
        backend=v["backend"],
        precision=v["precision"],
    )


def run(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    backend.select(cfg.backend)  # before anything imports Keras
    if cfg.fetch is None:
        check_out_dir(cfg.out, "--out")
    else:
        check_out_dir(cfg.fetch.parent, "--fetch")
    store = open_store(args)
    try:
        if cfg.fetch is not None:
            fetch(store, cfg.exp_key, cfg.fetch)
        else:
            backend.load_quietly()  # after every flag and the store are checked: seconds
            run_final(store, cfg)
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(PROG, build_parser, run, argv, interrupted="interrupted: nothing was stored")


if __name__ == "__main__":
    raise SystemExit(main())
