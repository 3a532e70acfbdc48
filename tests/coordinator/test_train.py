"""``strix train``: one configuration, no study, on a tiny real slice; and its options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator import train
from shared.errors import ConfigError
from shared.training.schedules import check_lr_decay, kept_epoch

TINY = ["--limit", "300", "--test-limit", "100"]


def test_train_tiny_slice_tests_and_exports(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["--model", "simplecnn", "--epochs", "2", "--seed", "0", "--monitor", "val_accuracy"]
    argv += ["--set", "dense_units=32", "--lr-decay", "0.8", "--data-dir", str(data_dir)]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--out", str(out), *TINY]
    assert train.main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert (out / "model.keras").stat().st_size == result["model_bytes"]
    assert result["n_test"] == 100 and 0.0 <= result["test_accuracy"] <= 1.0
    assert result["params"] == {"dense_units": 32, "lr_decay": 0.8}
    assert result["monitor"] == "val_accuracy"
    history = result["history"]
    kept = result["trial"]["best_epoch"] - 1
    assert kept == kept_epoch(history, "val_accuracy")  # the epoch with the best val accuracy
    assert result["trial"]["loss"] == pytest.approx(1 - history["val_accuracy"][kept])
    assert history["learning_rate"][1] == pytest.approx(0.0008)  # 0.001 x 0.8 after epoch 1
    assert sum(result["per_class"][c]["support"] for c in result["per_class"]) == 100


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "dropout_rate"], "expected key=value"),
        (["--lr-decay", "1.5"], "lr_decay must be a number in (0, 1]"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--image-size", "4"], "too small for simplecnn"),
    ],
)
def test_train_refuses_bad_flags_before_training(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train.main(["--model", "simplecnn", *argv]) == 2
    assert message in capsys.readouterr().err


def test_set_values_are_json_else_text() -> None:
    got = train.parse_sets(["a=1", "b=0.5", "c=avg", "d=true", "e=[1, 2]"])
    assert got == {"a": 1, "b": 0.5, "c": "avg", "d": True, "e": [1, 2]}


def test_kept_epoch_follows_the_monitor() -> None:
    history = {"val_loss": [0.5, 0.3, 0.4], "val_accuracy": [0.8, 0.85, 0.9]}
    assert kept_epoch(history, "val_loss") == 1
    assert kept_epoch(history, "val_accuracy") == 2
    with pytest.raises(ConfigError):
        check_lr_decay(0)
