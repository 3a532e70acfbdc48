"""A prepared GPU study: Strix's real coordinator, workers and embedded server on one GPU.

Each cell is a real ``strix launch`` of short ConvStrix trials with ``--local-workers N``
packed on the GPU (``--gpu-capacity N``) on the JAX backend, at one image size and one
precision. While it runs, ``nvidia-smi`` is sampled every second. The report gives, per
cell: trials/hour, peak GPU memory, mean GPU utilisation and the best val accuracy.

The default grid (3 sizes x 1/2/4 workers x float32/mixed_bfloat16, 8 trials a cell) is
sized for about 8 minutes on an H100/H200. Without ``nvidia-smi`` the GPU parts are skipped
(``--cpu`` shrinks the grid to a smoke run), so the script is tested on any CPU machine.

What it needs on the GPU machine besides its JAX, opencv, scikit-learn, tqdm and
matplotlib: keras, hyperopt, pymongo, nx-27017 and their pure dependencies, carried as
wheels (see docs/benchmarks.md, "GPU study").
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._common import ROOT, machine, make_parser, save_json, setup_logging, table

EXAMPLES = """
  python -m bench.studies.gpu_study --data-dir ../shared/data/fashion-mnist \\
      --out out/bench/gpu-study.json
  python -m bench.studies.gpu_study --cpu --data-dir ../shared/data/fashion-mnist   # CPU smoke run
"""
GRID = {"sizes": "32,64,128", "workers": "1,2,4", "precisions": "float32,mixed_bfloat16"}
CPU_GRID = {"sizes": "28", "workers": "1", "precisions": "float32", "trials": 2, "limit": 300}


class GpuSampler(threading.Thread):
    """Samples nvidia-smi's memory and utilisation once a second until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.rows: list[tuple[float, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        query = [
            "nvidia-smi",
            "--query-gpu=memory.used,utilization.gpu",
            "--format=csv,noheader,nounits",
        ]
        while not self.halt.wait(1.0):
            out = subprocess.run(query, capture_output=True, text=True).stdout.split("\n")[0]
            mem, util = (float(v) for v in out.split(","))
            self.rows.append((mem, util))

    def summary(self) -> dict[str, Any]:
        if not self.rows:
            return {"gpu_mem_peak_mib": None, "gpu_util_mean": None}
        mems, utils = zip(*self.rows, strict=True)
        return {"gpu_mem_peak_mib": max(mems), "gpu_util_mean": round(sum(utils) / len(utils), 1)}


def launch_cell(
    args: argparse.Namespace, url: str, size: int, workers: int, precision: str
) -> dict:
    """One real study; returns its outcome, throughput and GPU figures."""
    key = f"gpu-{size}px-{workers}w-{precision}"
    argv = [sys.executable, "-m", "coordinator.cli", "launch", "--model", "convstrix"]
    argv += ["--backend", "jax", "--precision", precision, "--local-workers", str(workers)]
    argv += ["--gpu-capacity", str(workers), "--max-evals", str(args.trials), "--image-size"]
    argv += [str(size), "--max-epochs", str(args.epochs), "--limit", str(args.limit), "--seed"]
    argv += ["1", "--clamp", "--mongo", url, "--exp-key", key, "--no-progress"]
    argv += ["--data-dir", args.data_dir, "--home", args.home]
    sampler = GpuSampler()
    if shutil.which("nvidia-smi"):
        sampler.start()
    started = time.monotonic()
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - started
    sampler.halt.set()
    if res.returncode != 0:
        raise SystemExit(f"cell {key} failed:\n{res.stderr[-3000:]}")
    return {
        "size": size,
        "workers": workers,
        "precision": precision,
        "seconds": round(seconds, 1),
        "trials_per_hour": round(args.trials / seconds * 3600, 1),
        **sampler.summary(),
        **_outcome(url, key),
    }


def _outcome(url: str, key: str) -> dict[str, Any]:
    from shared.store import connect

    store = connect(url)
    try:
        best = store.best(key)
        acc = best[0]["result"].get("val_accuracy") if best else None
        return {"ok": store.tally(key)["ok"], "best_val_accuracy": acc}
    finally:
        store.close()


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("python -m bench.studies.gpu_study", __doc__.splitlines()[0], EXAMPLES)
    p.add_argument("--sizes", default=GRID["sizes"], help="px, comma-separated")
    p.add_argument("--workers", default=GRID["workers"], help="workers packed on the GPU")
    p.add_argument("--precisions", default=GRID["precisions"], help="comma-separated")
    p.add_argument("--trials", type=int, default=8, help="trials per cell")
    p.add_argument("--epochs", type=int, default=1, help="epochs per trial")
    p.add_argument("--limit", type=int, default=6000, help="training images per trial")
    p.add_argument("--data-dir", required=True, help="Fashion-MNIST idx files")
    p.add_argument("--home", help="Strix home for caches and logs (default: a temp dir)")
    p.add_argument("--cpu", action="store_true", help="a CPU smoke run: " + str(CPU_GRID))
    p.add_argument("--out", help="write the results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    if "--cpu" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(**CPU_GRID)
    args = p.parse_args(argv)
    setup_logging()
    from shared.store.embedded import free_port, start_embedded

    with tempfile.TemporaryDirectory() as tmp:
        args.home = args.home or tmp
        server = start_embedded(Path(tmp) / "mongo", "127.0.0.1", free_port())
        try:
            cells = itertools.product(
                [int(s) for s in args.sizes.split(",")],
                [int(w) for w in args.workers.split(",")],
                args.precisions.split(","),
            )
            rows = [launch_cell(args, server.url, *cell) for cell in cells]
        finally:
            server.stop()
    if not shutil.which("nvidia-smi"):
        print("no nvidia-smi: GPU memory and utilisation skipped (CPU run)")
    print(table(rows))
    save_json(args.out, {**machine(), "cells": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
