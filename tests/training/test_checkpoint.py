"""Checkpoints in one process: what a snapshot holds, and that a trial stopped at a batch
or an epoch boundary and resumed from its checkpoint has the history of an uninterrupted
run with the same seed (real TensorFlow training on a few hundred Fashion-MNIST images).

The cross-process version, with real workers, SIGTERM and kill -9, is in
``tests/worker/test_preemption.py``.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from shared.data.cache import Dataset, load
from shared.data.spec import DataSpec
from shared.training.checkpoint import MAX_SHARE, Preempted, Snapshot, decode, encode, spliced
from shared.training.loop import Budget, run_trial

PARAMS: dict[str, Any] = {
    "batch_size": 32,
    "learning_rate": 1e-3,
    "optimizer": "adam",
    "fcl_num_layers": 1,
    "fcl_layer_size": 32,
    "fcl_dropout_rate": 0.2,  # dropout: its seed state must travel in the checkpoint
    "activation": "relu",
    "lr_decay": 0.9,
}
BUDGET = Budget(max_epochs=4, patience=3)


@pytest.fixture(scope="module")
def data(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    spec = DataSpec(image_size=28, validation_fraction=0.2, limit=400, test_limit=50)
    return load(spec, data_dir=data_dir, cache_dir=tmp_path_factory.mktemp("cache"))


class MemoryVault:
    """A vault in a dict; ``stop_at`` sets ``stop`` when training reaches (epoch, batch)."""

    def __init__(self, interval_s: float = 300.0) -> None:
        self.interval_s = interval_s
        self.blob: bytes | None = None
        self.positions: list[tuple[int, int]] = []
        self.reached = 0.0

    def load(self) -> bytes | None:
        return self.blob

    def save(self, blob: bytes, epoch: int, batch: int) -> bool:
        self.blob = blob
        self.positions.append((epoch, batch))
        return True


class StopAt(keras.callbacks.Callback):
    """Sets ``event`` after batch ``batch`` of epoch ``epoch`` (0-based), as a signal would."""

    def __init__(self, event: threading.Event, epoch: int, batch: int) -> None:
        super().__init__()
        self.event, self.at, self.epoch = event, (epoch, batch), -1

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if (self.epoch, batch) == self.at:
            self.event.set()


def _trial(data: Dataset, vault: MemoryVault | None, **kw: Any) -> dict:
    return run_trial("baseline", PARAMS, data=data, budget=BUDGET, seed=7, vault=vault, **kw)


def _same_history(a: dict, b: dict) -> None:
    assert a["history"].keys() == b["history"].keys()
    for key in a["history"]:
        np.testing.assert_allclose(a["history"][key], b["history"][key], rtol=1e-4, atol=1e-5)


def test_snapshot_round_trips_without_pickle() -> None:
    snap = Snapshot(
        epoch=2,
        batch=3,
        weights=[np.arange(6, dtype=np.float32).reshape(2, 3)],
        optimizer=[np.array(5, dtype=np.int64)],
        callbacks={"KeptBest": {"best": math.nan, "best_weights": [np.ones(2)], "wait": 1}},
        rng={"python": [3, [1, 2], None]},
        partial={"loss": 0.5},
        resumes=1,
    )
    back = decode(encode(snap))
    assert back.position == (2, 3) and back.resumes == 1
    np.testing.assert_array_equal(back.weights[0], snap.weights[0])
    assert math.isnan(back.callbacks["KeptBest"]["best"])
    np.testing.assert_array_equal(back.callbacks["KeptBest"]["best_weights"][0], np.ones(2))
    with pytest.raises(ValueError, match="not a Strix checkpoint"):
        decode(b"not a checkpoint")


def test_callback_states_survive_a_checkpoint() -> None:
    """Early stopping's best, wait and best weights, the pruner's best and verdict, and the
    recorder's history come back from the bytes as they were saved."""
    from shared.training.callbacks import EpochRecorder, KeptBest, PruneOnRung
    from shared.training.pruning import Decision

    kept = KeptBest("val_loss", patience=3, restore_best_weights=True)
    kept.on_train_begin()
    kept.wait, kept.best, kept.best_epoch, kept.best_weights = 2, 0.25, 1, [np.ones((2, 2))]
    pruner = PruneOnRung(lambda epoch, value: None)
    pruner.best = 0.8
    pruner.decision = Decision("median", 2, 0.8, 0.85, (0.9, 0.85), True)
    recorder = EpochRecorder()
    recorder.history, recorder.epoch_seconds = {"loss": [1.0, 0.5]}, [3.0, 2.5]
    cbs = {"KeptBest": kept, "PruneOnRung": pruner, "EpochRecorder": recorder}
    snap = Snapshot(0, 0, [], [], callbacks={k: cb.state() for k, cb in cbs.items()})
    back = decode(encode(snap)).callbacks
    kept2 = KeptBest("val_loss", patience=3, restore_best_weights=True)
    kept2.on_train_begin()
    kept2.load_state(back["KeptBest"])
    assert (kept2.wait, kept2.best, kept2.best_epoch) == (2, 0.25, 1)
    np.testing.assert_array_equal(kept2.best_weights[0], np.ones((2, 2)))
    pruner2 = PruneOnRung(lambda epoch, value: None)
    pruner2.load_state(back["PruneOnRung"])
    assert pruner2.best == 0.8 and pruner2.decision == pruner.decision
    recorder2 = EpochRecorder()
    recorder2.load_state(back["EpochRecorder"])
    assert recorder2.history == recorder.history and recorder2.epochs == 2
    assert recorder2.summary()["train_seconds"] >= back["EpochRecorder"]["elapsed"]


def test_spliced_means_weigh_both_parts_by_samples() -> None:
    out = spliced({"loss": 1.0, "accuracy": 0.5}, 100, {"loss": 2.0, "val_loss": 9.0}, 300)
    assert out == {"loss": 1.75, "val_loss": 9.0}


@pytest.mark.parametrize("where", [(1, 4), (2, -1)], ids=["mid-epoch", "epoch-end"])
def test_a_stopped_trial_resumes_with_the_uninterrupted_history(
    data: Dataset, where: tuple[int, int]
) -> None:
    whole = _trial(data, MemoryVault())
    assert whole["status"] == "ok" and whole["epochs"] == 4 and whole["resumes"] == 0

    vault, stop = MemoryVault(), threading.Event()
    batches = math.ceil(len(data.x_train) / PARAMS["batch_size"])
    epoch, batch = where if where[1] >= 0 else (where[0], batches - 1)
    with pytest.raises(Preempted):
        _trial(data, vault, stop=stop, callbacks=[StopAt(stop, epoch, batch)])
    expected = (epoch, batch + 1) if batch + 1 < batches else (epoch + 1, 0)
    assert vault.positions[-1] == expected  # saved at the next boundary, then stopped

    resumed = _trial(data, vault)
    _same_history(resumed, whole)
    assert resumed["resumes"] == 1
    for key in ("epochs", "best_epoch", "stopped_early", "status"):
        assert resumed[key] == whole[key], key
    assert resumed["val_accuracy"] == pytest.approx(whole["val_accuracy"], abs=1e-5)


class SlowVault(MemoryVault):
    """Every save takes 50 ms, and each is timed from the training thread's side."""

    def __init__(self, interval_s: float) -> None:
        super().__init__(interval_s)
        self.starts: list[float] = []

    def save(self, blob: bytes, epoch: int, batch: int) -> bool:
        self.starts.append(time.monotonic())
        time.sleep(0.05)
        return super().save(blob, epoch, batch)


def test_checkpoints_cost_at_most_their_share_of_training(data: Dataset) -> None:
    """Asked to save at every batch, with saves of 50 ms, the trial still trains at least
    19 times as long as it saves (MAX_SHARE = 5 %) between two checkpoints."""
    vault = SlowVault(interval_s=0.0)
    result = _trial(data, vault)
    assert result["status"] == "ok" and result["checkpoints"] == len(vault.starts) >= 1
    gaps = [b - a for a, b in zip(vault.starts, vault.starts[1:], strict=False)]
    least = 0.05 * (1 / MAX_SHARE - 1)
    assert all(gap >= least for gap in gaps), (least, gaps)
