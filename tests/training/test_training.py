"""The trial objective on real Fashion-MNIST slices with real TensorFlow training.

Images are 28 px and the slices a few hundred images, so each training test takes a few
seconds on a laptop CPU; the numbers checked are relations (loss == 1 - val_accuracy,
restored weights == best epoch), never hard-coded results.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from shared.data.cache import Dataset, load
from shared.data.spec import DataSpec
from shared.errors import ConfigError
from shared.store import encode
from shared.training.loop import (
    OPTIMIZER_CLASSES,
    Budget,
    diverged,
    make_optimizer,
    run_trial,
    train,
)

SMALL: dict[str, Any] = {
    "batch_size": 32,
    "learning_rate": 1e-3,
    "optimizer": "adam",
    "num_blocks": 2,
    "block_size": 1,
    "fcl_num_layers": 1,
    "fcl_layer_size": 64,
    "fcl_dropout_rate": 0.1,
    "activation": "relu",
}


@pytest.fixture(scope="module")
def data(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    spec = DataSpec(image_size=28, validation_fraction=0.2, limit=640, test_limit=100)
    return load(spec, data_dir=data_dir, cache_dir=tmp_path_factory.mktemp("cache"))


class _ScrambleOnce(keras.callbacks.Callback):
    """Shuffles every kernel after the first epoch, so the next epoch is reliably worse.

    It also keeps the weights the first epoch produced and those the model ends with, which
    EarlyStopping (earlier in the callback list) has restored by then.
    """

    def __init__(self) -> None:
        super().__init__()
        self.after_first: list[np.ndarray] = []
        self.at_end: list[np.ndarray] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch != 0:
            return
        self.after_first = self.model.get_weights()
        rng = np.random.default_rng(0)
        for w in self.model.trainable_weights:
            if len(w.shape) > 1:
                flat = rng.permutation(np.asarray(w).ravel())
                w.assign(flat.reshape(w.shape) * 3.0)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.at_end = self.model.get_weights()


@pytest.fixture
def op_determinism() -> Iterator[None]:
    """Undo run_trial(deterministic=True)'s process-wide switch for the rest of the suite."""
    from tensorflow.python.framework import config as tf_config

    was = tf_config.is_op_determinism_enabled()
    yield
    if not was:
        tf_config.disable_op_determinism()


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_epochs": 0},
        {"patience": -1},
        {"max_epochs": 2.5},
        {"patience": "5"},
        {"patience": True},
    ],
)
def test_budget_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        Budget(**kwargs)


def test_budget_round_trips_and_rejects_unknown_fields() -> None:
    budget = Budget(max_epochs=7, patience=2)
    assert Budget.from_dict(json.loads(json.dumps(budget.to_dict()))) == budget
    assert Budget.from_dict({}) == Budget()
    with pytest.raises(ConfigError, match="max_epoch"):
        Budget.from_dict({"max_epoch": 3})


@pytest.mark.parametrize("name", sorted(OPTIMIZER_CLASSES))
def test_make_optimizer_knows_the_sampled_names(name: str) -> None:
    opt = make_optimizer(name, 0.01)
    assert isinstance(opt, OPTIMIZER_CLASSES[name])
    assert math.isclose(float(opt.learning_rate), 0.01, rel_tol=1e-6)


@pytest.mark.parametrize(
    ("name", "lr"), [("adagrad", 0.1), ("adam", 0), ("adam", "x"), ("sgd", math.nan)]
)
def test_make_optimizer_rejects_bad_values(name: str, lr: Any) -> None:
    with pytest.raises(ConfigError, match=r"optimizer|learning_rate"):
        make_optimizer(name, lr)


def test_bad_training_params_raise_config_error(data: Dataset) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        run_trial("convstrix", {**SMALL, "batch_size": 0}, data=data, budget=Budget(1, 1))
    with pytest.raises(ConfigError, match="optimizer"):
        run_trial("convstrix", {**SMALL, "optimizer": "lbfgs"}, data=data, budget=Budget(1, 1))
    with pytest.raises(ConfigError, match="seed"):
        run_trial("convstrix", SMALL, data=data, deterministic=True)


def test_early_stopping_needs_validation(data: Dataset) -> None:
    with pytest.raises(ConfigError, match="validation"):
        train("convstrix", SMALL, data=data, epochs=1, early_stopping=True, validation=False)


def test_diverged_reads_non_finite_losses() -> None:
    assert diverged({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}) is None
    assert "epoch 2" in (diverged({"loss": [1.0, None], "val_loss": [1.0, 2.0]}) or "")
    assert "val_loss" in (diverged({"loss": [1.0], "val_loss": [math.inf]}) or "")


# --- trials -------------------------------------------------------------------------


def test_unbuildable_params_fail_with_the_model_error(data: Dataset) -> None:
    result = run_trial("convstrix", {**SMALL, "num_blocks": 6}, data=data, budget=Budget(1, 1))
    assert result["status"] == "fail"
    assert result["loss"] is None
    assert "cannot be built" in result["reason"]
    assert "num_blocks" in result["reason"] or "28" in result["reason"]
    assert result["epochs"] == 0
    json.dumps(result, allow_nan=False)


def _overcommit_refuses_huge_allocations() -> bool:
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() in {"0", "2"}
    except OSError:
        return False


@pytest.mark.skipif(
    not _overcommit_refuses_huge_allocations(),
    reason="needs Linux overcommit mode 0/2, where an allocation beyond RAM fails at once",
)
def test_model_too_large_for_memory_fails_as_oom(data: Dataset) -> None:
    # A dense kernel 4x larger than the machine's RAM: TensorFlow's allocator refuses it
    # (ResourceExhaustedError) before anything is touched, like a GPU that is too small.
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    units = math.ceil(4 * ram / (28 * 28 * 32 * 4))
    params = {**SMALL, "num_blocks": 1, "fcl_layer_size": units}
    result = run_trial("convstrix", params, data=data, budget=Budget(1, 1))
    assert result["status"] == "fail"
    assert result["reason"] == "oom"
    assert "OOM" in result["detail"] or "memory" in result["detail"].lower()
    json.dumps(result, allow_nan=False)


@pytest.mark.slow
def test_small_trial_reports_a_sane_result(data: Dataset) -> None:
    result = run_trial(
        "convstrix", SMALL, data=data, budget=Budget(max_epochs=2, patience=5), seed=1
    )
    assert result["status"] == "ok", result.get("reason")
    assert 0 < result["loss"] < 1
    assert result["loss"] == pytest.approx(1 - result["val_accuracy"])
    assert 1 <= result["epochs"] <= 2
    assert 1 <= result["best_epoch"] <= result["epochs"]
    history = result["history"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
    assert all(len(values) == result["epochs"] for values in history.values())
    assert result["val_loss"] == min(history["val_loss"])
    assert result["val_accuracy"] == history["val_accuracy"][result["best_epoch"] - 1]
    assert result["params_count"] > 0
    assert result["train_seconds"] > 0
    assert (result["model"], result["image_size"]) == ("convstrix", 28)
    assert json.loads(json.dumps(result, allow_nan=False)) == result  # plain types only


def test_tensorboard_logs_or_a_clear_error(data: Dataset, tmp_path: Path) -> None:
    tb = tmp_path / "tb"
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            run_trial("convstrix", SMALL, data=data, budget=Budget(1, 1), tb_dir=str(tb))
        return
    result = run_trial("convstrix", SMALL, data=data, budget=Budget(1, 1), tb_dir=str(tb))
    assert result["status"] == "ok", result.get("reason")
    assert any(tb.rglob("*tfevents*"))


@pytest.mark.slow
def test_divergent_learning_rate_fails_instead_of_crashing(data: Dataset) -> None:
    params = {**SMALL, "optimizer": "sgd", "learning_rate": 1e4, "activation": "selu"}
    result = run_trial("convstrix", params, data=data, budget=Budget(max_epochs=3, patience=3))
    assert result["status"] == "fail"
    assert result["loss"] is None
    assert "NaN" in result["reason"] and "learning_rate" in result["reason"]
    assert result["epochs"] == 1  # stopped in the first epoch, not after the whole budget
    assert not all(math.isfinite(v) for v in result["history"]["loss"])  # NaN kept as a float
    json.dumps(encode(result), allow_nan=False)  # the store's one cleaner makes it storable


@pytest.mark.slow
def test_early_stopping_reports_and_restores_the_best_epoch(data: Dataset) -> None:
    scramble = _ScrambleOnce()
    budget = Budget(max_epochs=4, patience=1)
    result = run_trial("convstrix", SMALL, data=data, budget=budget, callbacks=[scramble])
    assert result["status"] == "ok", result.get("reason")
    history = result["history"]
    assert history["val_loss"][1] > history["val_loss"][0]  # the scrambled epoch is worse
    assert result["epochs"] == 2 and result["stopped_early"]
    assert result["best_epoch"] == 1
    assert result["val_accuracy"] == history["val_accuracy"][0]
    assert result["loss"] == pytest.approx(1 - history["val_accuracy"][0])
    assert len(scramble.at_end) == len(scramble.after_first) > 0
    for restored, best in zip(scramble.at_end, scramble.after_first, strict=True):
        np.testing.assert_array_equal(restored, best)


@pytest.mark.slow
@pytest.mark.usefixtures("op_determinism")
def test_train_without_validation_is_reproducible_when_deterministic(data: Dataset) -> None:
    kwargs: dict[str, Any] = {"epochs": 1, "early_stopping": False, "validation": False}
    runs = [
        train("convstrix", SMALL, data=data, seed=7, deterministic=True, **kwargs) for _ in range(2)
    ]
    (model_a, history_a), (model_b, history_b) = runs
    assert set(history_a) == {"loss", "accuracy"}  # nothing was validated
    assert history_a == history_b
    for a, b in zip(model_a.get_weights(), model_b.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    probabilities = model_a.predict(data.x_val[:8], verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
