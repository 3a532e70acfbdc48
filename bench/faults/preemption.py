"""``python -m bench.faults.preemption``: what checkpoints save when workers are preempted.

The same seeded study (random search, so both runs train the same trials) runs twice
under the same seeded kill schedule, once with checkpoints (the default) and once with
``--checkpoint-every 0``. Kill ``i`` hits the worker training the schedule's trial when
that trial has completed ``e_i`` epochs and ``f_i`` of an epoch more has passed; the
kills alternate SIGTERM with a warning (the grace period the deployment gives, then
kill -9 if the worker still runs) and a plain kill -9. A fresh worker replaces each one.

Per kill it measures the training thrown away: from the last saved state (the checkpoint
the next attempt resumes from, or the attempt's start without one) to the moment the
worker stopped training, in seconds and in that trial's epochs. It reports the wall
time, and checks that every trial completed exactly once (one DONE result per tid, one
metric row per epoch) and whether both runs reached the same losses.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    OUT_DIR,
    add_quick,
    fmt,
    local_data_dir,
    machine,
    make_parser,
    parse,
    setup_logging,
    table,
)
from bench.faults.harness import Harness
from shared.store import State

log = logging.getLogger(__name__)

EXAMPLES = """
  python -m bench.faults.preemption --quick      # 3 trials, 2 kills (~5 min on 2 cores)
  python -m bench.faults.preemption --trials 6 --kills 4 --limit 3000 --epochs 4
"""
QUICK = {"trials": 3, "kills": 2, "limit": 1200, "epochs": 3}
GRACE_S = 20.0  # a kill -9-ed trial is requeued this long after its last heartbeat
DATA = {"image_size": 28, "validation_fraction": 0.2, "test_limit": 100}


@dataclass(frozen=True)
class Kill:
    trial: int  # index of the trial in posting order
    epochs: int  # completed epochs before the kill
    fraction: float  # of an epoch more
    warn: bool  # SIGTERM with a grace period, else kill -9


def schedule(seed: int, kills: int, trials: int, epochs: int) -> list[Kill]:
    """The seeded kill schedule: distinct trials, alternating SIGTERM and kill -9."""
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(trials), min(kills, trials)))
    return [
        Kill(t, rng.randint(1, epochs - 1), round(rng.uniform(0.2, 0.8), 2), i % 2 == 0)
        for i, t in enumerate(chosen)
    ]


def _space(epochs: int, limit: int, seed: int) -> dict:
    from hyperopt import hp

    from shared.training.jobs import keras_space

    params = {
        "batch_size": 32,
        "optimizer": "adam",
        "learning_rate": hp.loguniform("learning_rate", -8, -5),
        "fcl_num_layers": 1,
        "fcl_layer_size": hp.choice("fcl_layer_size", [64, 128]),
        "fcl_dropout_rate": hp.uniform("fcl_dropout_rate", 0.0, 0.4),
        "activation": "relu",
    }
    budget = {"max_epochs": epochs, "patience": epochs}
    return keras_space("baseline", params, {**DATA, "limit": limit}, budget, seed=seed)


class Run:
    """One study under the kill schedule, with checkpoints on or off."""

    def __init__(self, args: Any, work: Path, checkpoints: bool) -> None:
        self.args, self.checkpoints = args, checkpoints
        # heartbeats slow enough for a loaded machine: only the kills may lose a trial
        self.h = Harness(work, heartbeat=2.0, max_attempts=20, fake_gpus=0, capacity=1)
        self.h.args += ["--data-dir", args.data_dir] if args.data_dir else []
        self.h.args += ["--cache-dir", str(args.cache_dir), "--grace", str(GRACE_S)]
        self.h.args += [] if checkpoints else ["--checkpoint-every", "0"]
        self.lost: list[dict] = []

    def go(self, plan: list[Kill]) -> dict:
        from coordinator.study.study import Study, run

        a, h = self.args, self.h
        study = Study(
            h.store, h.exp_key, _objective(), _space(a.epochs, a.limit, a.seed), a.trials,
            algo="rand", max_queue_len=a.trials, seed=a.seed,
        )  # fmt: skip
        start = time.monotonic()
        h.spawn(1, wait=False)
        poster = threading.Thread(
            target=run,
            args=(study,),
            kwargs={"grace": GRACE_S, "max_attempts": 20, "progress": False},
        )
        poster.start()
        for kill in plan:
            self._kill(kill)
        poster.join(a.timeout)
        wall = time.monotonic() - start
        return {"wall_s": wall, **self._verify()}

    def _tid(self, index: int) -> int | None:
        docs = sorted(self.h.store.trials_in(self.h.exp_key), key=lambda d: d["tid"])
        return docs[index]["tid"] if index < len(docs) else None

    def _kill(self, kill: Kill) -> None:
        h = self.h
        doc = self._await_position(kill)
        if doc is None:
            log.warning("kill %s: its trial finished before the kill point; skipped", kill)
            return
        owner = str(doc.get("owner", "")).split(":")
        pid = int(owner[1]) if len(owner) > 1 and owner[1].isdigit() else None
        proc = next((p for p in h.workers if p.pid == pid), None)
        if proc is None:
            return
        epoch_s = float((doc.get("progress") or {}).get("epoch_seconds") or 1.0)
        t_kill = time.time()
        proc.send_signal(signal.SIGTERM if kill.warn else signal.SIGKILL)
        if kill.warn:
            try:
                proc.wait(self.args.warning)
            except Exception:
                proc.kill()
        proc.wait()
        h.reap_exits()
        after = h.store.trials_in(h.exp_key, tids=[doc["tid"]])[0]
        self.lost.append(self._lost(kill, doc, after, t_kill, epoch_s))
        h.spawn(1, wait=False)

    def _await_position(self, kill: Kill) -> dict | None:
        """The trial document once the trial reached the kill point; None if it finished."""
        h, deadline = self.h, time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            tid = self._tid(kill.trial)
            doc = None if tid is None else h.store.trials_in(h.exp_key, tids=[tid])[0]
            progress = (doc or {}).get("progress") or {}
            if doc is not None and doc.get("state") == State.DONE:
                return None
            done = int(progress.get("epoch") or 0)
            if doc is not None and doc.get("state") == State.RUNNING and done >= kill.epochs:
                wait = kill.fraction * float(progress.get("epoch_seconds") or 1.0)
                time.sleep(max(0.0, float(progress.get("updated", 0)) + wait - time.time()))
                return h.store.trials_in(h.exp_key, tids=[tid])[0]
            time.sleep(0.05)
        return None

    def _lost(self, kill: Kill, before: dict, after: dict, t_kill: float, epoch_s: float) -> dict:
        """Training thrown away, in seconds and epochs of that trial: from the last saved
        state (the checkpoint the next attempt resumes from) to the kill; without one,
        every epoch of the attempt and the one in progress. Start-up (TensorFlow import,
        data loading) is not counted: a resumed attempt pays it too."""
        progress = before.get("progress") or {}
        since_epoch = max(0.0, t_kill - float(progress.get("updated") or t_kill))
        pointer = after.get("checkpoint") or {}
        saved = float(pointer.get("saved") or 0.0)
        if not self.checkpoints:
            seconds = int(progress.get("epoch") or 0) * epoch_s + since_epoch
        elif saved >= float(before.get("started") or 0.0):
            seconds = max(0.0, t_kill - saved)  # a SIGTERM-ed worker saves after the signal
        else:
            seconds = since_epoch
        kind = "SIGTERM" if kill.warn else "kill -9"
        epochs = seconds / epoch_s
        return {"tid": before["tid"], "kind": kind, "lost_s": seconds, "lost_epochs": epochs}

    def _verify(self) -> dict:
        docs = self.h.store.trials_in(self.h.exp_key)
        done = [
            d
            for d in docs
            if d.get("state") == State.DONE and (d.get("result") or {}).get("status") == "ok"
        ]
        rows_ok = all(
            [r["epoch"] for r in self.h.store.history(self.h.exp_key, d["tid"])]
            == list(range(1, d["result"]["epochs"] + 1))
            for d in done
        )
        return {
            "trials": len(docs),
            "done_once": len(done) == self.args.trials == len({d["tid"] for d in done}),
            "one_row_per_epoch": rows_ok,
            "losses": {d["tid"]: round(d["result"]["loss"], 5) for d in done},
            "resumes": sum(int(d["result"].get("resumes") or 0) for d in done),
        }


def _objective() -> Any:
    from shared.training.jobs import objective

    return objective


def build_parser() -> Any:
    p = make_parser("python -m bench.faults.preemption", __doc__.splitlines()[0], EXAMPLES)
    p.add_argument("--trials", type=int, default=6, help="trials in the study")
    p.add_argument("--kills", type=int, default=4, help="kills, each on a different trial")
    p.add_argument("--epochs", type=int, default=4, help="epochs per trial")
    p.add_argument("--limit", type=int, default=3000, help="Fashion-MNIST images used")
    p.add_argument("--seed", type=int, default=0, help="seeds the study and the kill schedule")
    p.add_argument("--warning", type=float, default=60.0, help="SIGTERM's grace period, s")
    p.add_argument("--timeout", type=float, default=1800.0, help="per run, s")
    p.add_argument(
        "--data-dir",
        default=local_data_dir(),
        help="Fashion-MNIST idx directory (default: ../shared/data/fashion-mnist if present)",
    )
    p.add_argument("--only", choices=("on", "off"), help="run one of the two studies")
    p.add_argument("-v", "--verbose", action="store_true")
    add_quick(p, QUICK)
    return p


def report(runs: dict[str, dict], lost: dict[str, list[dict]]) -> str:
    rows = []
    for name, res in runs.items():
        kills = lost[name]
        epochs = sum(k["lost_epochs"] for k in kills)
        rows.append(
            {
                "checkpoints": name,
                "kills": len(kills),
                "epochs_lost": fmt(epochs, 2),
                "per_kill": fmt(epochs / max(1, len(kills)), 2),
                "max_per_kill": fmt(max((k["lost_epochs"] for k in kills), default=0.0), 2),
                "wall_s": fmt(res["wall_s"], 1),
                "done_once": res["done_once"] and res["one_row_per_epoch"],
                "resumes": res["resumes"],
            }
        )
    lines = [table(rows)]
    for name, kills in lost.items():
        detail = ", ".join(f"{k['kind']} {fmt(k['lost_epochs'], 2)}" for k in kills)
        lines.append(f"  {name}: {detail}")
    if len(runs) == 2:
        same = runs["on"]["losses"] == runs["off"]["losses"]
        lines.append(f"same losses in both runs: {same}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv, QUICK)
    setup_logging(args.verbose)
    plan = schedule(args.seed, args.kills, args.trials, args.epochs)
    print(f"machine: {machine()}; load average {os.getloadavg()}", flush=True)
    print("kill schedule: " + "; ".join(str(k) for k in plan), flush=True)
    runs, lost = {}, {}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="preemption-", dir=OUT_DIR))  # kept: the worker logs
    print(f"worker logs in {work}", flush=True)
    args.cache_dir = work / "cache"
    for name in [args.only] if args.only else ["on", "off"]:
        run = Run(args, work / name, checkpoints=name == "on")
        try:
            runs[name] = run.go(plan)
        finally:
            run.h.close()
        lost[name] = run.lost
        print(f"{name}: {runs[name]} lost={run.lost}", flush=True)
    print(report(runs, lost))
    print(f"load average after: {os.getloadavg()}")
    ok = all(r["done_once"] and r["one_row_per_epoch"] for r in runs.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
