"""How ``strix final`` measures, exports and documents the retrained model.

The test split was never seen by any trial, so its accuracy is an honest estimate. The
``.keras`` export has rescaling and augmentation inside (``predict(uint8_images)``
works); its provenance holds everything needed to trust, reproduce or compare it.
Keras, scikit-learn and numpy are imported inside the functions that use them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import platform
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared import __version__
from shared.data.idx import CLASS_NAMES
from shared.training import backend

if TYPE_CHECKING:
    import keras
    import numpy as np

    from shared.data.cache import Dataset

PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "hyperopt", "pymongo", "matplotlib")


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict:
    """Predictions on the test images and sklearn's per-class report (seed: digits=3)."""
    import numpy as np
    from sklearn.metrics import classification_report, confusion_matrix

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


def export_model(model: keras.Model, path: Path) -> bytes:
    """Save an uncompiled copy as .keras: no optimizer state (it would triple the size and
    warn on every load), so it is for inference; compile it again to fine-tune."""
    import keras

    copy = keras.Model.from_config(model.get_config())  # clone_model would keep compile
    copy.set_weights(model.get_weights())
    copy.save(path)
    return path.read_bytes()


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "strix": __version__}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def per_class(report: dict) -> dict[str, dict[str, float]]:
    keys = {"precision": "precision", "recall": "recall", "f1": "f1-score", "support": "support"}
    return {name: {k: float(report[name][v]) for k, v in keys.items()} for name in CLASS_NAMES}


def data_source(data: Dataset, run: dict) -> dict:
    """Where the data came from now, and what the study recorded when that differs."""
    out: dict[str, Any] = {"dir": run.get("data_dir"), "hash": data.source_hash}
    recorded = run.get("recorded_source") or {}
    out["changed"] = bool(recorded.get("hash")) and recorded["hash"] != data.source_hash
    if out["changed"]:
        out["study"] = recorded
    return out


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
        "data_source": data_source(data, run),
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
        "backend": backend.current(),
        "gpu": backend.device_name(),
        "host": socket.gethostname(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model_sha256": hashlib.sha256(blob).hexdigest(),
        "model_bytes": len(blob),
    }
