"""Pruning and study budgets with the real server and real worker processes.

The studies train real baseline trials (28 px, 500 images, up to 4 epochs) so that the
Keras callback, the rung records in MongoDB and the results views are all the real
ones; the budget tests use the toy objective, since they are about posting, not training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from coordinator.study import study as study_mod
from coordinator.study.limits import StudyLimits
from shared.config import defaults
from shared.store import State, Store, connect
from shared.training.jobs import toy_objective, toy_space
from tests.helpers import ROOT, insert_toy_jobs, start_worker, stop_all, wait_until

pytestmark = pytest.mark.slow


def _env(home: Path) -> dict:
    env = {**os.environ, defaults.ENV_HOME: str(home), defaults.ENV_CACHE_DIR: str(home / "c")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop(defaults.ENV_MONGO, None)
    env.pop(defaults.ENV_DB, None)
    return env


def _launch_cmd(url: str, db: str, exp: str, data_dir: Path, *extra: str) -> list[str]:
    args = ["--model", "baseline", "--mongo", url, "--db", db, "--exp-key", exp]
    args += ["--image-size", "28", "--limit", "500", "--max-epochs", "4", "--seed", "1"]
    args += ["--data-dir", str(data_dir), "--no-progress", "--heartbeat", "1", *extra]
    return [sys.executable, "-m", "coordinator.launch", *args]


def _launch(url: str, db: str, exp: str, data_dir: Path, home: Path, *extra: str):
    cmd = _launch_cmd(url, db, exp, data_dir, *extra)
    return subprocess.run(
        cmd, cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=600
    )


def _check_study(store: Store, exp: str, n: int) -> list[dict]:
    """n trials, each once, all ok; some pruned, each with its metrics and rung record."""
    docs = store.trials_in(exp)
    assert len(docs) == n and len({d["tid"] for d in docs}) == n
    assert all(d["state"] == State.DONE and d["result"]["status"] == "ok" for d in docs)
    pruned = [d for d in docs if d["result"].get("pruned")]
    assert pruned, "no trial was pruned"
    records = list(store.rungs.find({"exp_key": exp}))
    assert len(records) == len({(r["tid"], r["epoch"]) for r in records})
    for d in pruned:
        result, tid = d["result"], d["tid"]
        epoch = result["pruned_at_epoch"]
        rows = [r for r in store.history(exp, tid) if r["owner"] == d["owner"]]
        assert [r["epoch"] for r in rows] == list(range(1, epoch + 1)), "metrics are kept"
        best = max(r["val_accuracy"] for r in rows)
        assert result["loss"] == pytest.approx(1 - best) and result["epochs"] == epoch
        (mine,) = [r for r in records if (r["tid"], r["epoch"]) == (tid, epoch)]
        assert mine["value"] == pytest.approx(best)
        assert result["pruning"]["prune"] and result["pruning"]["compared"]
        assert best < result["pruning"]["threshold"]
    return pruned


def _results(url: str, db: str, exp: str, home: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "coordinator.results", "--mongo", url, "--db", db]
    out = subprocess.run(
        [*cmd, "--exp-key", exp, *args], cwd=ROOT, env=_env(home), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _check_views(url: str, db: str, exp: str, home: Path, pruned: list[dict]) -> None:
    status = json.loads(_results(url, db, exp, home, "--format", "json"))
    assert status["counts"]["pruned"] == len(pruned)
    marked = {r["tid"]: r["pruned_at"] for r in status["top"] if r["pruned_at"] is not None}
    assert marked.items() <= {d["tid"]: d["result"]["pruned_at_epoch"] for d in pruned}.items()
    rows = json.loads(_results(url, db, exp, home, "--state", "pruned", "--format", "json"))
    assert sorted(r["tid"] for r in rows) == sorted(d["tid"] for d in pruned)
    assert f"pruned: {len(pruned)} of the ok trials" in _results(url, db, exp, home)
    _check_report(url, db, exp, home, pruned)


def _check_report(url: str, db: str, exp: str, home: Path, pruned: list[dict]) -> None:
    """``strix report`` counts the pruned trials and marks each ranked one by its epoch."""
    out = home / "report"
    cmd = [sys.executable, "-m", "coordinator.report", "--mongo", url, "--db", db]
    cmd += ["--exp-key", exp, "--out", str(out), "--top", "50"]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(home), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = (out / "report.md").read_text()
    assert f" {len(pruned)} pruned" in next(x for x in text.splitlines() if x.startswith("Trials:"))
    header = next(x for x in text.splitlines() if x.startswith("| tid |")).split(" | ")
    column = header.index("pruned_at")
    rows = [x.split(" | ") for x in text.splitlines() if x.startswith("| ") and x[2].isdigit()]
    marked = {int(r[0][2:]): r[column] for r in rows if r[column] != "-"}
    assert marked == {d["tid"]: str(d["result"]["pruned_at_epoch"]) for d in pruned}


def test_asha_prunes_across_workers_and_survives_a_kill9(
    mongo_url: str, db_name: str, data_dir: Path, tmp_path: Path
) -> None:
    """Three workers share ASHA's rungs; one is killed mid-trial once trials are pruned;
    its trial is rerun elsewhere and every trial ends exactly once."""
    home = tmp_path / "home"
    flags = ["--exp-key", "asha", "--heartbeat", "1", "--poll-cap", "0.25", "--home", str(home)]
    flags += ["--data-dir", str(data_dir), "--cache-dir", str(home / "c")]
    workers = [
        start_worker(mongo_url, db_name, *flags, log=tmp_path / f"w{i}.log") for i in range(3)
    ]
    cmd = _launch_cmd(mongo_url, db_name, "asha", data_dir, "--pruner", "asha")
    cmd += ["--max-evals", "8", "--max-queue-len", "3"]
    launch = subprocess.Popen(cmd, cwd=ROOT, env=_env(home), stdout=subprocess.PIPE, text=True)
    store = connect(mongo_url, db_name)
    try:
        by_pid = {w.pid: w for w in workers}

        def victim() -> int | None:
            if not store.count_pruned("asha"):
                return None
            running = store.trials_in("asha", [State.RUNNING], ["owner"])
            pids = [int(str(d["owner"]).split(":")[1]) for d in running if d.get("owner")]
            return next((p for p in pids if p in by_pid), None)

        assert wait_until(lambda: victim() is not None, 400, interval=0.2), "nothing to kill"
        pid = victim()
        os.kill(pid, signal.SIGKILL)
        by_pid[pid].wait()
        out, _ = launch.communicate(timeout=500)
        assert launch.returncode == 0, out[-3000:]
        pruned = _check_study(store, "asha", 8)
        (line,) = [x for x in out.splitlines() if x.startswith("study asha finished: best")]
        assert f"; 8 ok ({len(pruned)} pruned), 0 failed, 0 error, 0 running, 0 queued" in line
        assert any((d.get("attempts") or 0) >= 1 for d in store.trials_in("asha"))
        _check_views(mongo_url, db_name, "asha", home, pruned)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
        stop_all(workers)
        store.close()


def test_median_prunes_and_a_resumed_study_keeps_its_pruner(
    mongo_url: str, db_name: str, data_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first = ["--pruner", "median", "--pruner-startup", "2", "--local-workers", "2"]
    done = _launch(mongo_url, db_name, "med", data_dir, home, *first, "--max-evals", "6")
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = ["--local-workers", "2", "--max-evals", "8"]  # no pruner flags: keep median
    again = _launch(mongo_url, db_name, "med", data_dir, home, *resumed)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "pruner median" in again.stderr
    store = connect(mongo_url, db_name)
    try:
        docs = store.trials_in("med", fields=["strix", "spec"])
        assert {d["strix"]["pruner"]["kind"] for d in docs} == {"median"}
        assert {d["spec"]["pruner"]["startup"] for d in docs} == {2}
        pruned = _check_study(store, "med", 8)
        _check_views(mongo_url, db_name, "med", home, pruned)
    finally:
        store.close()
    clash = _launch(mongo_url, db_name, "med", data_dir, home, "--pruner", "asha")
    assert clash.returncode == 2
    assert "study med was launched with --pruner median" in clash.stderr
    assert "drop --pruner" in clash.stderr


# --- the store side -------------------------------------------------------------------


def test_concurrent_rung_writers_never_show_a_half_written_rung(store: Store) -> None:
    """Eight writers record 200 trials at one rung (and rewrite them, as re-runs do) while
    a reader reads the rung: every read is whole values only, and never shrinks."""
    stop = threading.Event()
    seen: list[list[float]] = []

    insert_toy_jobs(store, "c", 200)

    def write(k: int) -> None:
        while (job := store.reserve(f"w{k}", "c", ["light"])) is not None:
            tid = job["tid"]
            assert store.record_rung(job, f"w{k}", 3, 0.001 * tid)
            assert store.record_rung(job, f"w{k}", 3, 0.5 + 0.001 * tid)  # rewritten

    def read() -> None:
        while not stop.is_set():
            seen.append(store.rung_values("c", 3, but=0))

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    final = store.rung_values("c", 3)
    assert sorted(final) == pytest.approx([0.5 + 0.001 * t for t in range(200)])
    others = sorted(store.rung_values("c", 3, but=5))
    assert others == [v for v in sorted(final) if v != pytest.approx(0.505)]
    assert all(isinstance(v, float) for values in seen for v in values)
    assert [len(v) for v in seen] == sorted(len(v) for v in seen)


def test_withdrawing_keeps_trials_that_a_worker_started(store: Store) -> None:
    fresh, requeued, running = insert_toy_jobs(store, "w", 3)
    store.jobs.update_one({"tid": requeued}, {"$set": {"started": 1.0, "requeues": 1}})
    store.jobs.update_one({"tid": running}, {"$set": {"state": 1, "owner": "x", "started": 1.0}})
    assert store.withdraw_queued("w") == 1
    assert sorted(d["tid"] for d in store.trials_in("w")) == [requeued, running]
    assert fresh not in [d["tid"] for d in store.trials_in("w")]


# --- study budgets with real workers (toy objective) --------------------------------


def _toy_study(store: Store, limits: StudyLimits, sleep_s: float, n: int) -> study_mod.Study:
    space = toy_space(sleep_s)
    return study_mod.Study(
        store, "b", toy_objective, space, n, algo="rand", max_queue_len=4, seed=1, limits=limits
    )


@pytest.mark.parametrize(
    ("limits", "sleep_s", "said"),
    [
        (StudyLimits(timeout_s=6.0), 1.0, "--timeout 0.1 min reached"),
        (StudyLimits(stop_after=3), 0.3, "--stop-after 3: no better loss"),
    ],
    ids=["timeout", "stop-after"],
)
def test_a_budget_stops_posting_and_running_trials_finish(
    store: Store, mongo_url: str, db_name: str, limits: StudyLimits, sleep_s: float, said: str
) -> None:
    flags = ("--exp-key", "b", "--heartbeat", "1", "--poll-cap", "0.2")
    workers = [start_worker(mongo_url, db_name, *flags) for _ in range(2)]
    try:
        study = _toy_study(store, limits, sleep_s, 200)
        stopped = study_mod.run(study, grace=3.0, max_attempts=3, progress=False, interval=0.2)
    finally:
        stop_all(workers)
    assert stopped is not None and stopped.startswith(said), stopped
    tally = store.tally("b")
    assert tally["queued"] == tally["running"] == tally["failed"] == tally["error"] == 0
    assert 2 <= tally["ok"] < 200
    closing = study_mod.closing_text(store, "b", stopped)
    assert closing.startswith(f"study b stopped early ({stopped})")
