"""Search quality in simulated time: Strix's engines and liars against Optuna, DEHB and
random search with ASHA, for 1 to 64 workers, in seconds of CPU (issue 29).

Every method gets the same budget: ``--budget`` trial-epochs, so W workers get a virtual
wall time of budget / W (equal evaluations at every worker count). Strix's methods call its
real suggestion code (``coordinator.study.study.suggestion``: each ``--algo`` engine with
its ``--liar``) and its real pruning decision (``shared.training.pruning.decide``); see
``bench/search/``. One JSON line per run goes to ``--out`` as it finishes, so a long run
can be summarised before it ends (``--summarise FILE``).

Examples:
  # the figures in docs/benchmarks.md (long: run it in the background)
  python -m bench.simulate --problem mfh6 --workers 1 4 16 64 --seeds 20 --out sim.jsonl
  # the issue's Hartmann-6 table: one epoch per trial, 100 evaluations
  python -m bench.simulate --problem h6 --budget 100 --workers 1 4 16 --seeds 10
  # a quick look at two methods
  python -m bench.simulate --methods strix:tpe/worst/asha optuna --seeds 2 --workers 4
  # summarise what a run wrote so far
  python -m bench.simulate --summarise sim.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable

from bench.search import problems, report, searchers, sim

METHODS = (
    "strix:tpe/worst/asha",
    "strix:tpe/none/asha",
    "strix:tpe/as-before/asha",
    "strix:optuna-tpe/worst/asha",
    "strix:optuna-tpe/none/asha",
    "strix:rand/none/asha",
    "optuna",
    "dehb",
)
EXTRA = ("strix:tpe/mean/asha", "strix:tpe/best/asha", "strix:anneal/worst/asha")


def searcher(method: str, problem: problems.Problem, seed: int) -> sim.Searcher:
    """``strix:ALGO/LIAR/PRUNER`` (liar ``as-before``: hyperopt's own view, pending at inf),
    ``optuna`` (TPE multivariate + constant liar + Hyperband) or ``dehb``."""
    if method == "optuna":
        return searchers.OptunaNative(problem, seed)
    if method == "dehb":
        return searchers.Dehb(problem, seed)
    algo, liar, pruner = method.removeprefix("strix:").split("/")
    return searchers.Strix(problem, algo, None if liar == "as-before" else liar, pruner, seed)


def one_run(method: str, problem: problems.Problem, workers: int, budget: int, seed: int) -> dict:
    horizon = budget / workers
    started = time.process_time()
    trace = sim.simulate(searcher(method, problem, seed), problem, workers, horizon, seed)
    return {
        "problem": problem.name,
        "method": method,
        "workers": workers,
        "seed": seed,
        "budget": budget,
        "regret": [trace.regret_at(f * horizon) for f in report.FRACTIONS],
        "trials": trace.trials,
        "epochs": trace.epochs,
        "complete": trace.complete,
        "pruned": trace.pruned,
        "cpu_s": round(time.process_time() - started, 2),
    }


def run_grid(args: argparse.Namespace, emit: Callable[[dict], None]) -> list[dict]:
    out = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        problem = problems.get(args.problem, seed=seed, max_epochs=args.max_epochs)
        for workers in args.workers:
            for method in args.methods:
                record = one_run(method, problem, workers, args.budget, seed)
                emit(record)
                out.append(record)
    return out


def summary(records: list[dict]) -> str:
    parts = []
    for problem in sorted({r["problem"] for r in records}):
        parts += [report.table(records, problem), ""]
        for w in sorted({r["workers"] for r in records if r["problem"] == problem}):
            parts += [report.curve_table(records, problem, w), ""]
        best, scores = report.choose(records, problem)
        ranked = ", ".join(f"{m} {s:.3f}" for m, s in sorted(scores.items(), key=lambda i: i[1]))
        parts += [f"choose ({problem}): {best}  (mean over worker counts of median regret: "
                  f"{ranked})", ""]  # fmt: skip
    return "\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.simulate",
        description=__doc__.split("\n\n")[0],
        epilog="\n".join(__doc__.split("Examples:")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--problem", default="mfh6", choices=problems.NAMES)
    p.add_argument("--max-epochs", type=int, default=9, help="epochs of a full budget (mfh*)")
    p.add_argument("--budget", type=int, default=360, help="trial-epochs per study")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument(
        "--methods",
        nargs="+",
        help=f"default: {' '.join(METHODS)}; also: {' '.join(EXTRA)} (with --summarise: "
        "only these)",
    )
    p.add_argument("--out", help="append one JSON line per run to this file")
    p.add_argument("--summarise", metavar="FILE", help="only print the figures of FILE")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    if args.summarise:
        with open(args.summarise) as f:
            records = [json.loads(line) for line in f if line.strip()]
        print(summary([r for r in records if r["method"] in (args.methods or [r["method"]])]))
        return 0
    args.methods = args.methods or list(METHODS)
    sink = open(args.out, "a") if args.out else None  # noqa: SIM115 - closed below

    def emit(record: dict) -> None:
        print(json.dumps(record), file=sink or sys.stderr, flush=True)

    try:
        started = time.time()
        records = run_grid(args, emit)
    finally:
        if sink:
            sink.close()
    print(summary(records))
    load = os.getloadavg()[0]
    print(f"{len(records)} runs in {time.time() - started:.0f} s wall on {platform.node()} "
          f"({os.cpu_count()} CPUs, load {load:.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
