"""Loud and early failure, and no silent resume with changed flags (issue 28).

The pure decisions (what defines a study, what a size or weight problem says) are unit
tested; ``strix launch`` itself runs as a real process against the real embedded server,
with the study's earlier trials already in MongoDB, so no trial has to train.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.study import definition as defn
from coordinator.study import preflight
from shared import catalog
from shared.store import Store
from tests.helpers import ROOT

LONG_REASON = (
    "model cannot be built: num_blocks=5 pools a 8x8 image below 1x1; for 8 px use "
    "num_blocks in 1..4 (or a larger --image-size) -- and this tail must not be cut"
)


def launch(mongo_url: str, db: str, data_dir: Path, tmp_path: Path, *args: str):
    cmd = [sys.executable, "-m", "coordinator.cli", "launch", "--mongo", mongo_url, "--db", db]
    cmd += ["--data-dir", str(data_dir), "--home", str(tmp_path), "--no-progress", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def post_finished(store: Store, exp_key: str, results: list[dict], meta: dict) -> None:
    """Trials of an earlier launch, stamped as launch stamps them, already finished."""
    trials = store.trials(exp_key, meta=meta, refresh=False)
    tids = trials.new_trial_ids(len(results))
    miscs = [
        {"tid": t, "cmd": ("domain_attachment", "FMinIter_Domain"), "workdir": None}
        | {"idxs": {"x": [t]}, "vals": {"x": [0.5]}}
        for t in tids
    ]
    specs = [{"params": {"x": 0.5}}] * len(tids)
    trials.insert_trial_docs(
        trials.new_trial_docs(tids, specs, [{"status": "new"}] * len(tids), miscs)
    )
    for result in results:
        job = store.reserve("test", exp_key, ["light"])
        assert job is not None
        assert store.finish(job, "test", result)


# --- the study's definition ----------------------------------------------------------------


class Cfg:
    model, image_size, channels, interpolation, limit, seed = "convstrix", 32, 1, "cubic", 2000, 1
    weights, monitor, clamp, augment, feature_cache = None, "val_loss", True, False, False


def test_a_definition_names_each_difference_and_the_ways_out() -> None:
    stored = defn.definition(Cfg, {"hash": "a" * 64})
    now = {**stored, "--image-size": 28, "--weights": "imagenet", "--clamp": False}
    line = defn.refusal("convstrix-32px", defn.differences(stored, now))
    assert "\n" not in line
    assert "launched with --image-size 32, --weights none, --clamp" in line
    assert "asks for --image-size 28, --weights imagenet, no --clamp" in line
    assert "--exp-key convstrix-32px-image-size-28-weights-imagenet-clamp" in line
    assert "a higher --max-evals" in line


def test_unknown_data_and_new_fields_are_no_difference() -> None:
    stored = defn.definition(Cfg, {"hash": "a" * 64})
    assert defn.differences(stored, defn.definition(Cfg, {"hash": None})) == {}
    old = {k: v for k, v in stored.items() if k != "--monitor"}  # recorded before --monitor
    assert defn.differences(old, {**stored, "--monitor": "val_accuracy"}) == {}
    assert defn.differences(stored, defn.definition(Cfg, {"hash": "b" * 64}))[defn.DATA]


# --- what launch checks before posting -----------------------------------------------------


def test_sizes_the_space_cannot_build_are_refused_or_clamped() -> None:
    problem = preflight.size_problem("convstrix", 8, clamp=False)
    assert "at most 4 blocks" in problem and "--clamp" in problem and "--image-size 32" in problem
    assert preflight.size_problem("convstrix", 8, clamp=True) is None
    assert "num_blocks is drawn up to 4 instead of 6" in preflight.clamp_note("convstrix", 8, True)
    assert preflight.size_problem("convstrix", 32, clamp=False) is None
    assert preflight.clamp_note("convstrix", 32, True) is None
    assert preflight.size_problem("simplecnn", 8, clamp=False) is None


def test_pretrained_weights_must_be_findable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    offline = preflight.weights_problem("vggstrix", "imagenet", str(tmp_path), online=False)
    assert catalog.VGG19_WEIGHTS in offline and "--weights-dir" in offline
    assert "--weights none" in offline
    assert preflight.weights_problem("vggstrix", "imagenet", str(tmp_path), online=True) is None
    (tmp_path / catalog.VGG19_WEIGHTS).write_bytes(b"h5")
    assert preflight.weights_problem("vggstrix", "imagenet", str(tmp_path), online=False) is None
    assert "no such file" in preflight.weights_problem("vggstrix", "/no/such.h5", None)
    assert preflight.weights_problem("convstrix", None, None, online=False) is None


# --- launch, end to end ---------------------------------------------------------------------


def test_launch_exits_1_with_the_full_reason_when_no_trial_succeeded(
    mongo_url: str, db_name: str, store: Store, data_dir: Path, tmp_path: Path
) -> None:
    fail = {"status": "fail", "loss": None, "reason": LONG_REASON}
    post_finished(store, "doomed", [fail, fail], meta={})
    res = launch(mongo_url, db_name, data_dir, tmp_path, "--exp-key", "doomed", "--max-evals", "2")
    assert res.returncode == 1, res.stderr[-3000:]
    assert LONG_REASON in res.stderr
    assert "2 of 2 failed" in res.stderr and "Traceback" not in res.stderr


def test_a_changed_flag_is_refused_before_anything_is_posted(
    mongo_url: str, db_name: str, store: Store, data_dir: Path, tmp_path: Path
) -> None:
    """The study was launched with --weights none at 32 px; --image-size 28 --clamp is
    another study. Nothing is posted, nothing stored is touched."""
    args = ["--exp-key", "resumed", "--image-size", "32", "--limit", "2000", "--seed", "1"]
    args += ["--max-evals", "2"]
    ok = {"status": "ok", "loss": 0.2, "val_accuracy": 0.8}
    recorded = {**defn.definition(Cfg, {}), "--limit": 2000, "--clamp": False, defn.DATA: None}
    post_finished(store, "resumed", [ok, ok], meta={"definition": recorded})
    res = launch(mongo_url, db_name, data_dir, tmp_path, *args, "--max-evals", "4", "--clamp")
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "was launched with no --clamp" in line and "--exp-key resumed-clamp" in line
    assert len(store.trials_in("resumed")) == 2
    for _ in range(2):  # the same flags resume it; the second resume finds a Domain stored
        same = launch(mongo_url, db_name, data_dir, tmp_path, *args)
        assert same.returncode == 0, same.stderr[-3000:]
        assert "over-writing old domain" not in same.stderr
    assert len(store.trials_in("resumed")) == 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--image-size", "8"], "pass --clamp to draw num_blocks up to 4"),
        (["--model", "vggstrix", "--weights", "/no/such.h5"], "/no/such.h5: no such file"),
    ],
)
def test_launch_refuses_what_cannot_run(
    mongo_url: str, db_name: str, data_dir: Path, tmp_path: Path, args: list, fragment: str
) -> None:
    res = launch(mongo_url, db_name, data_dir, tmp_path, "--local-workers", "1", *args)
    assert res.returncode == 2 and fragment in res.stderr, res.stderr[-2000:]
