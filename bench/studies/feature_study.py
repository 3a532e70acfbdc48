"""``python -m bench.studies.feature_study``: trials per hour of a VGGStrix study,
cached vs uncached.

``bench.features`` times one epoch; this times what a user waits for. The same TPE study
(same seed, so the same trials) runs twice through ``strix launch --local-workers N``, once
with ``--feature-cache auto`` and once with ``--feature-cache off``, each on a fresh
embedded server and an empty cache directory, so the cached run pays its one-time
extraction. No pruner: every trial trains the same epochs in both runs. *wall* is the
launch command's wall time, worker start-up, data preparation and extraction included;
*trials/h* = trials / wall. ``weights=None`` gives the real timings without the ImageNet
file (only accuracy would differ).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import _common as common
from bench.studies.common import read_study, run_module

log = logging.getLogger(__name__)

EXAMPLES = """
  # the issue's set-up: 10 trials, 2 workers, VGGStrix at 32 px
  python -m bench.studies.feature_study --data-dir ../shared/data/fashion-mnist
  python -m bench.studies.feature_study --image-size 64 --limit 1000 \\
      --out out/bench/feature_study.json
"""
QUICK = {"trials": 2, "max_epochs": 1, "limit": 300}
COLUMNS = ["cache", "trials", "light", "heavy", "trial_epochs", "trial_s_median", "trial_s_max"]
COLUMNS += ["wall_s", "trials_per_h"]
COLUMNS += ["best_val_acc", "load_start", "load_end"]


def build_parser() -> argparse.ArgumentParser:
    p = common.make_parser(
        "python -m bench.studies.feature_study",
        " ".join(__doc__.split("\n\n")[0].split()),
        EXAMPLES,
    )
    a = p.add_argument
    a("--data-dir", required=True, help="Fashion-MNIST idx files")
    a("--model", default="vggstrix", help="a model whose catalog entry names a base layer")
    a("--image-size", type=int, default=32)
    a("--trials", type=int, default=10)
    a("--workers", type=int, default=2)
    a("--max-epochs", type=int, default=3, help="epochs per trial (patience never ends one)")
    a("--limit", type=int, default=2000, help="train+val images (stratified)")
    a("--seed", type=int, default=1)
    a("--caches", default="auto,off", help="which --feature-cache modes to run, in order")
    a("--work-dir", type=Path, help="server, caches and logs (default: a temp dir)")
    a("--out", help="write the figures as JSON here")
    common.add_quick(p, QUICK)
    return p


def launch_flags(args: argparse.Namespace, url: str, db: str, cache: str, work: Path) -> list:
    flags = ["--model", args.model, "--mongo", url, "--db", db, "--exp-key", "bench"]
    flags += ["--image-size", args.image_size, "--limit", args.limit, "--clamp"]
    flags += ["--max-evals", args.trials, "--max-epochs", args.max_epochs, "--seed", args.seed]
    flags += ["--patience", args.max_epochs, "--pruner", "none", "--weights", "none"]
    flags += ["--local-workers", args.workers, "--feature-cache", cache, "--no-progress"]
    flags += ["--data-dir", args.data_dir, "--cache-dir", work / f"cache-{cache}"]
    return [str(f) for f in flags]


def study_row(url: str, db: str) -> dict[str, Any]:
    """What the finished study's trials add up to."""
    docs, best = read_study(url, db, ["result", "resource", "started", "ended"])
    top = best.get("result") or {}
    results = [d.get("result") or {} for d in docs]
    classes = [d.get("resource") for d in docs]
    seconds = [d["ended"] - d["started"] for d in docs if d.get("ended") and d.get("started")]
    return {
        "trials": len(docs),
        "ok": sum(r.get("status") == "ok" for r in results),
        "light": classes.count("light"),
        "heavy": classes.count("heavy"),
        "trial_epochs": sum(int(r.get("epochs") or 0) for r in results),
        "trial_s_median": round(statistics.median(seconds), 1) if seconds else None,
        "trial_s_max": round(max(seconds), 1) if seconds else None,  # the cached: extraction
        "best_val_acc": top.get("val_accuracy"),
    }


def run_one(args: argparse.Namespace, url: str, work: Path, cache: str) -> dict:
    db = f"features_{cache}"
    flags = launch_flags(args, url, db, cache, work)
    log.info("study: --feature-cache %s (db %s)", cache, db)
    load = round(os.getloadavg()[0], 1)  # the machine may be shared: say how busy it was
    wall = run_module("coordinator.launch", flags, work, f"{db}.log")
    row = {"cache": cache, **study_row(url, db), "wall_s": round(wall, 1)}
    row["trials_per_h"] = round(row["ok"] * 3600 / wall, 1)
    row["load_start"], row["load_end"] = load, round(os.getloadavg()[0], 1)
    log.info("%s", row)
    return row


def main(argv: list[str] | None = None) -> int:
    args = common.parse(build_parser(), argv, QUICK)
    common.setup_logging()
    from shared.store.embedded import free_port, start_embedded

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="strix-bench-features-"))
    server = start_embedded(work / "nx", port=free_port())
    try:
        rows = [run_one(args, server.url, work, cache) for cache in args.caches.split(",")]
    finally:
        server.stop()
    print(common.table(rows, COLUMNS))
    by_mode = {r["cache"]: r["trials_per_h"] for r in rows}
    ratio = None
    if {"auto", "off"} <= by_mode.keys():
        ratio = round(by_mode["auto"] / max(by_mode["off"], 1e-9), 2)
        print(f"\ncached/uncached trials per hour: {ratio}x")
    common.save_json(
        args.out, {**common.machine(), "args": vars(args), "rows": rows, "ratio": ratio}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
