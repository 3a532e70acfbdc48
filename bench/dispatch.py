"""``python -m bench.dispatch``: what a trial costs to dispatch, Strix against stock hyperopt.

The objective is the toy quadratic with a sleep of ``d`` seconds, so everything a trial
takes beyond ``d`` is dispatch: posting, reserving, leasing, reporting. Both systems run
on the same embedded server, behind the same poster (``coordinator.study.study``, hyperopt's
FMinIter with ``rand``, so TPE's own cost stays out of the figures); only the worker loop
differs:

- ``strix``: N resident ``python -m worker`` processes (defaults: 0.05 s poll floor,
  2 s backoff cap), each pinned to one pretend GPU (``STRIX_FAKE_GPUS``), so the lease
  round trips of a GPU host are paid too.
- ``stock``: hyperopt-mongo-worker's own loop, i.e. ``hyperopt.mongoexp.MongoWorker`` on
  Strix's pymongo-4 store, with its CLI defaults: every trial in a fresh subprocess
  (``--use-subprocesses``, on by default) and ``--poll-interval 5`` (an idle child sleeps
  1 + U(0, 4) s between polls). hyperopt's own ``main_worker_helper`` cannot run on
  pymongo 4, so the same loop is rebuilt here with Strix's store underneath.
- ``stock-resident``: the same with ``--no-subprocesses`` (one MongoWorker process per
  slot running trial after trial), which isolates the queue protocol from process start.

Latency is measured per trial as ``start - max(posted, previous end on the same worker)``:
the time a trial waited in the queue *while a worker was free for it*. ``posted`` is
stamped into each job when the poster inserts it (a Trials subclass below); ``start`` and
``end`` are written by the toy objective. Throughput is trials / (last end - first post);
overhead is that makespan over the ideal ``trials * d / workers``.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import _common as common
from coordinator.study.procs import spawn, spawn_worker, stop_procs, wait_for_log
from shared.store import State
from shared.training.pruning import percentile

log = logging.getLogger(__name__)

EXAMPLES = """
  python -m bench.dispatch                                   # 200 trials, 1/2/4 workers, d=0/0.1/1
  python -m bench.dispatch --quick                           # 4 trials, 1 worker, d=0 (~20 s)
  python -m bench.dispatch --trials 20 --workers 1,2 --sleeps 0,0.1
  python -m bench.dispatch --systems strix --json out/bench/dispatch.json
  python -m bench.dispatch --mongo mongodb://127.0.0.1:27017   # an existing server
"""
STOCK_POLL_S = 5.0  # hyperopt-mongo-worker --poll-interval default
STOCK_RESERVE_TIMEOUT_S = 120.0  # hyperopt-mongo-worker --reserve-timeout default
SYSTEMS = ("strix", "stock", "stock-resident")
QUICK = {"trials": "4", "workers": "1", "sleeps": "0"}


@dataclass
class DispatchResult:
    system: str
    workers: int
    sleep_s: float
    trials: int
    makespan_s: float
    trials_per_s: float
    latency_med_ms: float
    latency_p95_ms: float
    overhead: float  # makespan / ideal - 1; NaN when the ideal is 0
    overhead_ms_per_trial: float  # worker time per trial not spent in the objective


# --- posting with a timestamp ---------------------------------------------------------------


def _stamped_store(url: str, db: str) -> Any:
    """A Store whose Trials stamp ``posted`` (epoch seconds) into every job they insert."""
    from shared.store import Store, StrixMongoTrials

    class StampedTrials(StrixMongoTrials):
        def _insert_trial_docs(self, docs: list[dict]) -> list[Any]:
            now = time.time()
            return super()._insert_trial_docs([{**d, "posted": now} for d in docs])

        def view(self, exp_key: str | None = None, **_: Any) -> StampedTrials:
            key = exp_key or self._exp_key
            return StampedTrials(self.handle, key, resource=self.resource, meta=self.meta)

    class StampedStore(Store):
        def trials(self, exp_key: str, **kw: Any) -> StampedTrials:
            return StampedTrials(self.handle, exp_key, **kw)

    store = StampedStore(url, db)
    store.ping()
    store.create_indexes()
    return store


# --- the two worker fleets ------------------------------------------------------------------


class StrixFleet:
    """N resident Strix workers, each on one pretend GPU whose capacity fits them all."""

    def __init__(self, url: str, db: str, exp_key: str, n: int, logs: Path, fake_gpus: int) -> None:
        self.url, self.db, self.n, self.logs = url, db, n, logs
        self.args = ["--exp-key", exp_key]
        self.env = {**common.QUIET_TF, "STRIX_HOST": f"bench-{uuid.uuid4().hex[:6]}"}
        if fake_gpus:
            self.env["STRIX_FAKE_GPUS"] = str(fake_gpus)
            self.args += ["--gpu-capacity", str(max(1, -(-n // fake_gpus)))]
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        paths = [self.logs / f"strix-{i}.log" for i in range(self.n)]
        self.procs = [
            spawn_worker(self.url, self.db, self.args, p, self.env, common.ROOT) for p in paths
        ]
        for proc, path in zip(self.procs, paths, strict=True):
            wait_for_log(proc, path, "ready on")

    def stop(self) -> None:
        stop_procs(self.procs)


class StockFleet:
    """hyperopt-mongo-worker's loop: per slot, one child per trial (or one resident child)."""

    def __init__(
        self,
        url: str,
        db: str,
        exp_key: str,
        n: int,
        logs: Path,
        poll: float,
        resident: bool = False,
    ) -> None:
        self.n, self.logs, self.resident = n, logs, resident
        self.base = ["stock-child", "--mongo", url, "--db", db, "--exp-key", exp_key]
        self.base += ["--poll-interval", str(poll)]
        self.halt = threading.Event()
        self.current: dict[int, subprocess.Popen] = {}
        self.threads = [threading.Thread(target=self._slot, args=(i,)) for i in range(n)]

    def _slot(self, i: int) -> None:
        workdir = self.logs / f"stock-{i}"
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [*self.base, "--slot", f"stock-slot{i}"]
        if self.resident:
            cmd += ["--max-jobs", "1000000"]
        while not self.halt.is_set():
            proc = spawn(
                "bench.dispatch", cmd, self.logs / f"stock-{i}.log", common.QUIET_TF, workdir
            )
            self.current[i] = proc
            if self.halt.is_set():
                proc.terminate()
            proc.wait()

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.halt.set()
        stop_procs(list(self.current.values()))
        for t in self.threads:
            t.join(60)


def stock_child(args: argparse.Namespace) -> int:
    """What ``hyperopt-mongo-worker --max-jobs=1`` does, on Strix's pymongo-4 store."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)  # as hyperopt's main()
    from hyperopt.mongoexp import MongoWorker, ReserveTimeout

    from shared.store import connect

    worker = MongoWorker(
        connect(args.mongo, args.db).handle, float(args.poll_interval), exp_key=args.exp_key
    )
    for _ in range(args.max_jobs):
        try:
            worker.run_one(host_id=args.slot, reserve_timeout=STOCK_RESERVE_TIMEOUT_S)
        except ReserveTimeout:
            return 1
    return 0


# --- measuring ------------------------------------------------------------------------------


def _slot_of(doc: dict) -> str:
    owner = doc.get("owner")
    return str(owner[0] if isinstance(owner, list | tuple) else owner)


def measure(docs: list[dict], system: str, workers: int, sleep_s: float) -> DispatchResult:
    """Throughput, latency and overhead from the finished job documents."""
    by_slot: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        by_slot[_slot_of(d)].append(d)
    latencies = []
    for slot_docs in by_slot.values():
        slot_docs.sort(key=lambda d: d["result"]["start"])
        prev_end = float("-inf")
        for d in slot_docs:
            latencies.append(d["result"]["start"] - max(d["posted"], prev_end))
            prev_end = d["result"]["end"]
    makespan = max(d["result"]["end"] for d in docs) - min(d["posted"] for d in docs)
    n = len(docs)
    ideal = n * sleep_s / workers
    return DispatchResult(
        system=system,
        workers=workers,
        sleep_s=sleep_s,
        trials=n,
        makespan_s=makespan,
        trials_per_s=n / makespan,
        latency_med_ms=1000 * percentile(latencies, 50),
        latency_p95_ms=1000 * percentile(latencies, 95),
        overhead=makespan / ideal - 1 if ideal else float("nan"),
        overhead_ms_per_trial=1000 * (makespan * workers - n * sleep_s) / n,
    )


def _check_done(docs: list[dict], trials: int) -> None:
    tids = [d["tid"] for d in docs]
    bad = [d["tid"] for d in docs if d["state"] != State.DONE]
    if len(docs) != trials or len(set(tids)) != len(tids) or bad:
        raise RuntimeError(
            f"expected {trials} DONE trials with unique tids, got {len(docs)} docs, "
            f"{len(set(tids))} distinct tids, not done: {bad}"
        )


def run_case(
    url: str, system: str, workers: int, sleep_s: float, args: argparse.Namespace, logs: Path
) -> DispatchResult:
    """One (system, workers, d) cell: fresh database, fresh fleet, one study."""
    from coordinator.study.study import Study, run
    from shared.training.jobs import toy_objective, toy_space

    db, key = f"bench_dispatch_{uuid.uuid4().hex[:8]}", "dispatch"
    store = _stamped_store(url, db)
    case_logs = logs / f"{system}-w{workers}-d{sleep_s:g}"
    if system == "strix":
        fleet: Any = StrixFleet(url, db, key, workers, case_logs, args.fake_gpus)
    else:
        resident = system == "stock-resident"
        fleet = StockFleet(url, db, key, workers, case_logs, args.stock_poll, resident)
    try:
        fleet.start()
        study = Study(
            store,
            key,
            toy_objective,
            toy_space(sleep_s),
            args.trials,
            algo="rand",
            max_queue_len=max(4, 2 * workers),
            seed=args.seed,
        )
        grace = 30.0 if system == "strix" else 1e6  # stock workers send no heartbeat
        run(study, grace=grace, max_attempts=3, progress=False)
    finally:
        fleet.stop()
    docs = store.trials_in(key, fields=["state", "owner", "posted", "result"])
    _check_done(docs, args.trials)
    store.client.drop_database(db)
    store.close()
    return measure(docs, system, workers, sleep_s)


def ratios(results: list[DispatchResult]) -> list[dict]:
    """Strix against each stock variant, cell by cell."""
    cells = {(r.system, r.workers, r.sleep_s): r for r in results}
    rows = []
    for (system, w, d), s in cells.items():
        for other in SYSTEMS[1:]:
            k = cells.get((other, w, d))
            if system != "strix" or k is None:
                continue
            rows.append(
                {
                    "vs": other,
                    "workers": w,
                    "sleep_s": d,
                    "throughput strix/stock": s.trials_per_s / k.trials_per_s,
                    "median latency strix/stock": s.latency_med_ms / k.latency_med_ms,
                    "p95 latency strix/stock": s.latency_p95_ms / k.latency_p95_ms,
                }
            )
    return rows


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = common.make_parser(
        "python -m bench.dispatch",
        "Dispatch overhead and throughput of Strix workers vs hyperopt's worker loop.",
        EXAMPLES,
    )
    sub = p.add_subparsers(dest="command")
    child = sub.add_parser("stock-child", help="internal: one hyperopt MongoWorker process")
    for flag in ("--mongo", "--db", "--exp-key", "--slot"):
        child.add_argument(flag, required=True)
    child.add_argument("--poll-interval", type=float, default=STOCK_POLL_S)
    child.add_argument("--max-jobs", type=int, default=1)
    a = p.add_argument
    a("--trials", type=int, default=200, help="trials per cell (default 200)")
    a("--workers", default="1,2,4", help="worker counts (default 1,2,4)")
    a("--sleeps", default="0,0.1,1", help="objective sleeps in s (default 0,0.1,1)")
    a("--systems", default=",".join(SYSTEMS), help=f"some of {','.join(SYSTEMS)} (default all)")
    a("--stock-poll", type=float, default=STOCK_POLL_S, help="stock --poll-interval (default 5)")
    a("--fake-gpus", type=int, default=1, help="pretend GPUs for Strix workers (0: CPU path)")
    a("--mongo", help="use this server instead of a fresh embedded nx-27017")
    a("--seed", type=int, default=0)
    a("--json", help="write the results here")
    a("--logs", help="keep worker logs here (default: a temp dir)")
    common.add_quick(p, QUICK)
    a("-v", "--verbose", action="store_true")
    return p


def run_all(args: argparse.Namespace, systems: list[str]) -> list[DispatchResult]:
    """Every (d, workers, system) cell on one server: ``--mongo`` or a fresh embedded one."""
    from shared.store.embedded import start_embedded

    results: list[DispatchResult] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="strix-dispatch-")))
        logs = Path(args.logs) if args.logs else tmp / "logs"
        url = args.mongo
        if not url:
            server = start_embedded(tmp / "nx")
            stack.callback(server.stop)
            url = server.url
        for d in _floats(args.sleeps):
            for w in (int(x) for x in _floats(args.workers)):
                for system in systems:
                    log.info("%s: %d worker(s), d=%gs, %d trials", system, w, d, args.trials)
                    results.append(run_case(url, system, w, d, args, logs))
                    print(common.table([asdict(results[-1])]).splitlines()[-1], flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = common.parse(build_parser(), argv, QUICK)
    if args.command == "stock-child":
        return stock_child(args)
    common.setup_logging(args.verbose)
    systems = [x.strip() for x in args.systems.split(",") if x.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or args.trials < 1:
        print(
            f"bench.dispatch: error: --systems {unknown} unknown (use {SYSTEMS}) or "
            f"--trials {args.trials} < 1",
            file=sys.stderr,
        )
        return 2
    info = common.machine()
    results = run_all(args, systems)
    print(f"\nmachine: {info}\n")
    print(common.table([asdict(r) for r in results]))
    if rows := ratios(results):
        print("\nratios (throughput > 1 and latency < 1 mean Strix is better):")
        print(common.table(rows))
    payload = {"machine": info, "args": vars(args), "results": [asdict(r) for r in results]}
    common.save_json(args.json, {**payload, "ratios": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
