"""Workers as real processes on loopback: GPU packing and a whole study end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from coordinator.study.study import Study
from coordinator.study.study import run as run_study
from shared.store import JOB_STATE_DONE, State, Store, connect
from shared.training.jobs import toy_objective, toy_space
from tests.helpers import ROOT, start_worker, stop_all


def _study(store: Store, key: str, n: int, sleep: float, resource: str) -> Study:
    return Study(
        store,
        key,
        toy_objective,
        toy_space(sleep),
        n,
        algo="rand",
        max_queue_len=n,
        resource=resource,
        seed=1,
    )


def _overlaps(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


@pytest.mark.slow
def test_light_trials_share_a_gpu_and_heavy_ones_run_alone(store, mongo_url, db_name, tmp_path):
    """2 pretend GPUs of capacity 4, 6 workers: light trials pack, heavy ones run alone."""
    env = {"STRIX_FAKE_GPUS": "2", "STRIX_HOST": "packhost"}
    args = ["--heartbeat", "1", "--gpu-capacity", "4", "--poll-interval", "0.02"]
    workers = [
        start_worker(mongo_url, db_name, *args, env=env, log=tmp_path / f"w{i}.log")
        for i in range(6)
    ]
    try:
        heavy = threading.Thread(
            target=run_study,
            args=(_study(store, "heavy", 4, 0.8, "heavy"),),
            kwargs={"grace": 3, "max_attempts": 3, "progress": False},
        )
        heavy.start()
        run_study(_study(store, "light", 16, 0.6, "light"), grace=3, max_attempts=3, progress=False)
        heavy.join(120)
    finally:
        stop_all(workers)
    docs = store.trials_in(None, [State.DONE])
    assert len(docs) == 20
    runs = [
        {**d["result"], "gpu": d["worker"]["gpu"], "heavy": d["resource"] == "heavy"} for d in docs
    ]
    assert {r["gpu"] for r in runs} == {0, 1}
    for r in runs:
        same_gpu = [o for o in runs if o is not r and o["gpu"] == r["gpu"] and _overlaps(r, o)]
        if r["heavy"]:
            assert not same_gpu, f"heavy trial shared its GPU: {r} with {same_gpu}"
        # capacity 4: at r's start, at most 3 others are running on its GPU
        at_start = [o for o in same_gpu if o["start"] <= r["start"]]
        assert len(at_start) <= 3
    packed = [
        r
        for r in runs
        if not r["heavy"]
        and any(_overlaps(r, o) and o["gpu"] == r["gpu"] for o in runs if o is not r)
    ]
    assert packed, "light trials never shared a GPU"


@pytest.mark.slow
def test_launch_runs_a_real_study_end_to_end(mongo_url, db_name, data_dir, tmp_path) -> None:
    """coordinator + 2 worker processes train 6 real trials on real Fashion-MNIST at 28 px."""
    env = {
        **os.environ,
        "STRIX_HOME": str(tmp_path / "home"),
        "STRIX_CACHE_DIR": str(tmp_path / "cache"),
    }
    cmd = [
        sys.executable,
        "-m",
        "coordinator.launch",
        "--model",
        "baseline",
        "--mongo",
        mongo_url,
        "--db",
        db_name,
        "--local-workers",
        "2",
        "--max-evals",
        "6",
        "--image-size",
        "28",
        "--limit",
        "300",
        "--max-epochs",
        "1",
        "--data-dir",
        str(data_dir),
        "--seed",
        "3",
        "--exp-key",
        "e2e",
        "--no-progress",
        "--heartbeat",
        "2",
        "--tb-dir",
        str(tmp_path / "tb"),
        "--monitor",
        "val_accuracy",
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    logs = "".join(p.read_text() for p in Path(tmp_path / "home" / "logs").glob("*.log"))
    assert proc.returncode == 0, proc.stderr[-3000:] + logs[-3000:]
    assert re.search(
        r"study e2e finished: best val_acc 0\.\d{4}; 6 ok, 0 failed, 0 error, 0 running, 0 queued",
        proc.stdout,
    ), proc.stdout
    assert "the validation split holds 30 images" in proc.stderr, "a 300-image study is warned"
    store = connect(mongo_url, db_name)
    docs = store.trials_in("e2e")
    assert len(docs) == 6 and len({d["tid"] for d in docs}) == 6
    for d in docs:
        assert d["state"] == JOB_STATE_DONE
        assert d["result"]["status"] == "ok", d["result"]
        assert 0.0 < d["result"]["loss"] < 1.0
        assert d["spec"]["model"] == "baseline" and d["worker"]["pid"] > 0
        assert d["spec"]["budget"]["monitor"] == "val_accuracy", "every trial gets --monitor"
    owners = {d["owner"] for d in docs}
    assert len(owners) == 2, "both workers should have run trials"
    assert all(store.history("e2e", d["tid"]) for d in docs), "per-epoch metrics written live"
    runs = sorted(p.name for p in (tmp_path / "tb" / "e2e").iterdir())
    assert runs == sorted(f"trial-{d['tid']}" for d in docs), "one TensorBoard run per trial"
    assert any((tmp_path / "tb" / "e2e").rglob("events.out.tfevents.*"))
