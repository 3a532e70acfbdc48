"""``python -m bench.studies.pruning``: what pruning saves, and what it costs in accuracy.

The same TPE study (same seed, so the same first suggestions) is run once per pruner,
``none``, ``median`` and ``asha``, each exactly as a user runs it: ``strix launch`` with
local workers on an embedded MongoDB, then ``strix final`` on the best trial. Per run:

- *trial-epochs*: the epochs all trials trained together (``result.epochs`` summed);
- *wall*: the launch command's wall time, worker start-up and data preparation included;
- *best val acc*: the best trial's validation accuracy (``strix results``' number);
- *test acc*: ``strix final`` on that trial (retrained on train+val, full test split).

``--query-trials N`` also measures the pruner's store query (the rung values of one
epoch, one indexed find) with N trials' records in the database. ``--merge`` joins the JSON
of separate invocations (one pruner or seed each, as a long run is best split) into one
set of tables, summary and ratios, without training anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import _common as common
from bench.studies.common import read_study, run_module
from shared.training.pruning import percentile

log = logging.getLogger(__name__)

EXAMPLES = """
  # the issue's set-up: ConvStrix 28 px, 10k images, 24 trials, 20 epochs, 2 workers, 2 seeds
  python -m bench.studies.pruning --out out/bench/pruning.json
  # a smaller run that fits a 2-core machine in about half an hour
  python -m bench.studies.pruning --trials 12 --max-epochs 8 --limit 3000 --seeds 1
  # only the cost of the pruner's store query with 1000 trials recorded
  python -m bench.studies.pruning --pruners "" --query-trials 1000
  # one table, summary and ratios from runs saved one pruner at a time
  python -m bench.studies.pruning --merge out/bench/pruning_*_s1.json out/bench/pruning_*_s2.json
"""
QUICK = {"trials": 4, "max_epochs": 3, "limit": 600, "seeds": "1", "query_trials": 50}
COLUMNS = ["pruner", "seed", "trials", "pruned", "failed", "trial_epochs", "wall_s"]
COLUMNS += ["best_val_acc", "test_acc", "best_tid", "load_start", "load_end"]


def build_parser() -> argparse.ArgumentParser:
    p = common.make_parser("python -m bench.studies.pruning", __doc__.splitlines()[0], EXAMPLES)
    a = p.add_argument
    a("--pruners", default="none,median,asha", help="comma-separated; '' runs none")
    a("--seeds", default="1,2", help="comma-separated TPE and training seeds")
    a("--model", default="convstrix")
    a("--image-size", type=int, default=28)
    a("--limit", type=int, default=10000, help="stratified training subset (images)")
    a("--trials", type=int, default=24)
    a("--max-epochs", type=int, default=20)
    a("--workers", type=int, default=2)
    a("--min-epochs", type=int, help="the pruners' first rung (default: Strix's)")
    a("--data-dir", help="Fashion-MNIST idx files (default: Strix's search)")
    a("--work-dir", type=Path, help="server, caches and logs (default: a temp dir)")
    a("--no-final", action="store_true", help="skip `strix final` on the best trial")
    a("--query-trials", type=int, default=1000, help="trials recorded for the query cost; 0: skip")
    a("--out", help="write the figures as JSON here")
    a("--merge", nargs="+", metavar="JSON", help="join these saved outputs' runs; trains nothing")
    a("-v", "--verbose", action="store_true")
    common.add_quick(p, QUICK)
    return p


# --- one study --------------------------------------------------------------------------


def launch_args(args: argparse.Namespace, url: str, db: str, pruner: str, seed: int) -> list:
    flags = ["--model", args.model, "--mongo", url, "--db", db, "--exp-key", "bench"]
    flags += ["--image-size", args.image_size, "--limit", args.limit, "--clamp"]
    flags += ["--max-evals", args.trials, "--max-epochs", args.max_epochs, "--seed", seed]
    flags += ["--local-workers", args.workers, "--pruner", pruner, "--no-progress"]
    flags += ["--min-epochs", args.min_epochs] if args.min_epochs else []
    flags += ["--data-dir", args.data_dir] if args.data_dir else []
    return [str(f) for f in flags]


def study_row(url: str, db: str) -> dict[str, Any]:
    """What the finished study's trials add up to."""
    docs, best = read_study(url, db, ["result"])
    results = [d.get("result") or {} for d in docs]
    top = best.get("result") or {}
    return {
        "trials": len(docs),
        "pruned": sum(bool(r.get("pruned")) for r in results),
        "failed": sum(r.get("status") != "ok" for r in results),
        "trial_epochs": sum(int(r.get("epochs") or 0) for r in results),
        "best_val_acc": top.get("val_accuracy"),
        "best_tid": best.get("tid"),
        "best_was_pruned": bool(top.get("pruned")),
    }


def final_test_accuracy(url: str, db: str, work: Path, name: str) -> tuple[float, float]:
    out = work / "final" / name
    flags = ["--exp-key", "bench", "--mongo", url, "--db", db, "--out", str(out), "--no-store"]
    seconds = run_module("coordinator.final", flags, work, f"{name}-final.log")
    prov = json.loads((out / "provenance.json").read_text())
    return float(prov["test_accuracy"]), seconds


def run_one(args: argparse.Namespace, url: str, work: Path, pruner: str, seed: int) -> dict:
    db = f"prune_{pruner}_{seed}"
    log.info("study: pruner %s, seed %d (db %s)", pruner, seed, db)
    load = round(os.getloadavg()[0], 1)  # the machine may be shared: say how busy it was
    flags = launch_args(args, url, db, pruner, seed)
    wall = run_module("coordinator.launch", flags, work, f"{db}.log")
    row = {"pruner": pruner, "seed": seed, **study_row(url, db), "wall_s": round(wall, 1)}
    row["load_start"], row["load_end"] = load, round(os.getloadavg()[0], 1)
    if not args.no_final:
        row["test_acc"], row["final_s"] = final_test_accuracy(url, db, work, db)
    log.info("%s", row)
    return row


# --- the store query ---------------------------------------------------------------------


def query_cost(url: str, n: int, max_epochs: int, reps: int = 50) -> list[dict]:
    """Time the pruner's read (one epoch's rung values) and write with ``n`` trials recorded:
    the median rule (a record per trial and epoch) and ASHA (records at its rungs)."""
    from shared.store import connect
    from shared.training.pruning import PrunerConfig

    store = connect(url, "prune_query")
    store.create_indexes()
    asha = PrunerConfig("asha", max_epochs=max_epochs)
    patterns = {
        "median": [(t, e) for t in range(n) for e in range(1, max_epochs)],
        "asha": [(t, r) for t in range(n) for k, r in enumerate(asha.rungs()) if t % 3**k == 0],
    }
    try:
        return [_measure(store, rule, pairs, n, reps) for rule, pairs in patterns.items()]
    finally:
        store.client.drop_database("prune_query")
        store.close()


def _measure(store: Any, rule: str, pairs: list[tuple[int, int]], n: int, reps: int) -> dict:
    """Record ``pairs`` (tid, epoch) under the study ``rule``, then time epoch 1's read."""
    from shared.store import encode

    docs = [{"exp_key": rule, "tid": t, "epoch": e, "value": 0.5 + (t % 97) / 1000}
            for t, e in pairs]  # fmt: skip
    for i in range(0, len(docs), 5000):
        store.rungs.insert_many(encode(docs[i : i + 5000]))
    reads = _timed(lambda: store.rung_values(rule, 1, but=0), reps)
    # a write is owner-guarded: each goes to a running job of its own (2 round trips)
    runs = [{"exp_key": rule, "tid": t, "state": 1, "owner": "bench", "attempt": 1}
            for t in range(n, n + reps + 1)]  # fmt: skip
    store.jobs.insert_many(runs)
    new = iter(runs)
    writes = _timed(lambda: store.record_rung(next(new), "bench", 1, 0.5), reps)
    return _cost_row(rule, n, len(docs), len(store.rung_values(rule, 1)), reads, writes)


def _timed(fn: Any, reps: int) -> list[float]:
    fn()  # warm the connection and the server's caches
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _cost_row(rule: str, n: int, records: int, got: int, reads: list, writes: list) -> dict:
    return {
        "rule": rule,
        "trials": n,
        "records": records,
        "values_read": got,
        "read_ms_median": round(statistics.median(reads), 2),
        "read_ms_p95": round(percentile(reads, 95), 2),
        "write_ms_median": round(statistics.median(writes), 2),
    }


# --- the report --------------------------------------------------------------------------


RUN_KEYS = ("trial_epochs", "wall_s", "best_val_acc", "test_acc")
RATIO_KEYS = ("trial_epochs_x", "wall_x", "best_val_acc_gap_pp", "test_acc_gap_pp")


def summary(rows: list[dict], by: str = "pruner", keys: tuple[str, ...] = RUN_KEYS) -> list[dict]:
    """Per ``by`` (a pruner, or a ratio's pair): the mean over seeds and the spread (max - min).

    A single seed's ratio says little (two seeds differed by 1.45x here), so ratios get
    their spread too."""
    out = []
    for group in dict.fromkeys(r[by] for r in rows):
        mine = [r for r in rows if r[by] == group]
        line: dict[str, Any] = {by: group, "seeds": len(mine)}
        for key in keys:
            values = [r[key] for r in mine if r.get(key) is not None]
            if values:
                line[key] = round(statistics.mean(values), 4)
                line[f"{key}_spread"] = round(max(values) - min(values), 4)
        out.append(line)
    return out


def ratios(rows: list[dict], base: str = "none", other: str = "asha") -> list[dict]:
    """``base``/``other`` per seed: trial-epochs and wall time; accuracy gaps in pp."""
    out = []
    for seed in dict.fromkeys(r["seed"] for r in rows):
        a = next((r for r in rows if (r["pruner"], r["seed"]) == (base, seed)), None)
        b = next((r for r in rows if (r["pruner"], r["seed"]) == (other, seed)), None)
        if a is None or b is None:
            continue
        line = {"seed": seed, "pair": f"{base}/{other}"}
        line["trial_epochs_x"] = round(a["trial_epochs"] / max(b["trial_epochs"], 1), 2)
        line["wall_x"] = round(a["wall_s"] / b["wall_s"], 2)
        for key in ("best_val_acc", "test_acc"):
            if a.get(key) is not None and b.get(key) is not None:
                line[f"{key}_gap_pp"] = round(100 * (a[key] - b[key]), 2)
        out.append(line)
    return out


def merged_runs(paths: list[str]) -> list[dict]:
    """The runs of several saved outputs; a (pruner, seed) saved twice is an error, not a mean."""
    rows: list[dict] = []
    for path in paths:
        try:
            rows += json.loads(Path(path).read_text()).get("runs", [])
        except (OSError, ValueError) as exc:
            msg = f"--merge: cannot read {path} ({exc}); pass files that --out saved"
            raise SystemExit(msg) from None
    keys = [(r["pruner"], r["seed"]) for r in rows]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise SystemExit(f"--merge: {twice} appear in more than one file; pass each run once")
    return rows


def report(args: argparse.Namespace, payload: dict[str, Any], rows: list[dict]) -> None:
    payload.update(runs=rows, summary=summary(rows), ratios=ratios(rows))
    payload["ratios"] += ratios(rows, "none", "median")
    payload["ratio_summary"] = summary(payload["ratios"], "pair", RATIO_KEYS)
    for name in ("runs", "summary", "ratios", "ratio_summary", "query"):
        if payload.get(name):
            print(f"\n{name}:\n{common.table(payload[name], COLUMNS if name == 'runs' else None)}")
    common.save_json(args.out, payload)


def main(argv: list[str] | None = None) -> int:
    args = common.parse(build_parser(), argv, QUICK)
    common.setup_logging(args.verbose)
    if args.merge:
        report(args, {"merged": args.merge}, merged_runs(args.merge))
        return 0
    from shared.store.embedded import free_port, start_embedded

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="strix-bench-pruning-"))
    pruners = [p for p in args.pruners.split(",") if p]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    payload: dict[str, Any] = {
        "machine": common.machine(),
        "args": vars(args),
        "work_dir": str(work),
    }
    server = start_embedded(work / "nx", port=free_port())
    try:
        rows = [run_one(args, server.url, work, p, s) for s in seeds for p in pruners]
        if args.query_trials:
            payload["query"] = query_cost(server.url, args.query_trials, args.max_epochs)
    finally:
        server.stop()
    report(args, payload, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
