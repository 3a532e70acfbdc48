"""``python -m bench.train``: training throughput, and what packing light trials buys.

Two measurements on whatever device TensorFlow finds (one GPU if present, else the CPU):

1. images/s of ``model.fit`` for ConvStrix and VGGStrix (``weights=None``: throughput does
   not depend on the weights' values) at each size, batch 64, after warm-up steps that
   absorb graph tracing. Models use their builders' defaults (ConvStrix: 4 blocks of one
   conv, one 1024-unit dense layer; VGGStrix: frozen VGG19 plus the same head). The
   batches are real Fashion-MNIST images, resized like the cache (OpenCV bicubic).
2. ``--concurrent 1,2,4``: N light trials (ConvStrix) as N separate processes on the same
   device, first one at a time, then all at once. Every process is started and warmed up
   before the clock runs, so process start and tracing are not counted. Packing speed-up
   = (sum of the one-at-a-time times) / (makespan of all at once); on a GPU with spare
   capacity it approaches N, on a CPU that a single trial already saturates it is ~1.

Each process sets ``TF_FORCE_GPU_ALLOW_GROWTH`` so N processes can share one GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from bench._common import child_env, machine, save_json, setup_logging, table

log = logging.getLogger("bench.train")

EXAMPLES = """
examples:
  python -m bench.train                                   # both models at 32/64/128 px
  python -m bench.train --models convstrix --sizes 32 --steps 5
  python -m bench.train --skip-throughput --concurrent 1,2,4 --out out/bench/train.json
  python -m bench.train --concurrent 1,2,4 --concurrent-size 128 --concurrent-steps 50
"""
TF_ENV = {"TF_FORCE_GPU_ALLOW_GROWTH": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}
POOL = 16  # distinct batches held in memory; more steps cycle through them


def real_batches(n: int, size: int, channels: int, data_dir: str | None) -> tuple[np.ndarray, ...]:
    """The first ``n`` training images at ``size`` px (uint8, as the cache stores them)."""
    from shared.data import load_raw, resize_images

    x_train, y_train, _, _ = load_raw(data_dir)
    x = resize_images(x_train[:n], size, "cubic", channels)
    return x, y_train[:n].astype(np.int32)


class Trainer:
    """One compiled model and its batches, timed for ``steps`` steps as often as asked."""

    def __init__(self, model: str, size: int, batch: int, warmup: int, data_dir: str | None):
        import keras

        from shared.models import build_model, get_model

        self.name, self.size, self.batch = model, size, batch
        channels = get_model(model).channels
        self.model = build_model(model, {}, image_size=size, channels=channels, weights=None)
        self.model.compile(
            optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        self.x, self.y = real_batches(POOL * batch, size, channels, data_dir)
        self.params = int(self.model.count_params())
        self.keras = keras
        self._fit(max(1, warmup))

    def _fit(self, steps: int) -> int:
        epochs = math.ceil(steps / POOL)
        n = min(steps, POOL) * self.batch
        self.model.fit(
            self.x[:n], self.y[:n], batch_size=self.batch, epochs=epochs, verbose=0, shuffle=False
        )
        return epochs * n

    def timed(self, steps: int) -> dict[str, Any]:
        start, t0 = time.time(), time.perf_counter()
        images = self._fit(steps)
        seconds = time.perf_counter() - t0
        return {
            "model": self.name,
            "size_px": self.size,
            "batch": self.batch,
            "images": images,
            "seconds": seconds,
            "images_per_s": images / seconds,
            "t_start": start,
            "t_end": start + seconds,
        }


def device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU x{len(gpus)}" if gpus else f"CPU ({os.cpu_count()} cores)"


def throughput(args: argparse.Namespace) -> list[dict]:
    rows = []
    for model in args.models.split(","):
        for size in args.sizes:
            trainer = Trainer(model, size, args.batch, args.warmup, args.data_dir)
            row = trainer.timed(args.steps)
            row["params"] = trainer.params
            rows.append({k: v for k, v in row.items() if not k.startswith("t_")})
            log.info("%s %dpx: %.1f images/s", model, size, row["images_per_s"])
            trainer.keras.backend.clear_session()
    return rows


# --- packing light trials ----------------------------------------------------------------------


def trial_child(args: argparse.Namespace) -> int:
    """A warmed-up light trial that trains ``--steps`` steps each time it reads ``go``."""
    trainer = Trainer(args.model, args.size, args.batch, args.warmup, args.data_dir)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "go":
            print(json.dumps(trainer.timed(args.steps)), flush=True)
    return 0


def _spawn_trials(n: int, args: argparse.Namespace) -> list[subprocess.Popen]:
    cmd = [
        sys.executable,
        "-m",
        "bench.train",
        "trial",
        "--model",
        "convstrix",
        "--size",
        str(args.concurrent_size),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.concurrent_steps),
        "--warmup",
        str(args.warmup),
        *(["--data-dir", args.data_dir] if args.data_dir else []),
    ]
    procs = [
        subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(TF_ENV)
        )
        for _ in range(n)
    ]
    for p in procs:
        if (p.stdout.readline() if p.stdout else "").strip() != "ready":
            raise RuntimeError(f"a trial process failed to start (exit {p.wait()})")
    return procs


def _go(procs: list[subprocess.Popen]) -> list[dict]:
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    return [json.loads(p.stdout.readline()) for p in procs if p.stdout]


def packing(n: int, args: argparse.Namespace) -> dict[str, Any]:
    procs = _spawn_trials(n, args)
    try:
        alone = [_go([p])[0] for p in procs]  # one at a time
        together = _go(procs)  # all at once
    finally:
        for p in procs:
            p.communicate(timeout=120)
    sequential = sum(r["seconds"] for r in alone)
    makespan = max(r["t_end"] for r in together) - min(r["t_start"] for r in together)
    images = sum(r["images"] for r in together)
    return {
        "processes": n,
        "size_px": args.concurrent_size,
        "steps": args.concurrent_steps,
        "one_at_a_time_s": sequential,
        "all_at_once_s": makespan,
        "speedup": sequential / makespan,
        "alone_images_per_s": sum(r["images"] for r in alone) / sequential,
        "packed_images_per_s": images / makespan,
    }


# --- CLI ---------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers like 1,2,4")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.train",
        description="Training images/s of ConvStrix/VGGStrix, and the speed-up of packing "
        "light trials onto one device.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command")
    t = sub.add_parser("trial", help="internal: one light trial process")
    t.add_argument("--model", default="convstrix")
    for flag, default in (("--size", 64), ("--batch", 64), ("--steps", 30), ("--warmup", 2)):
        t.add_argument(flag, type=int, default=default)
    t.add_argument("--data-dir")
    a = p.add_argument
    a("--models", default="convstrix,vggstrix", help="default convstrix,vggstrix")
    a("--sizes", type=_ints, default=[32, 64, 128], help="px (default 32,64,128)")
    a("--batch", type=int, default=64, help="batch size (default 64)")
    a("--steps", type=int, default=10, help="timed steps per model and size (default 10)")
    a("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    a("--skip-throughput", action="store_true", help="only the --concurrent part")
    a("--concurrent", type=_ints, default=[], help="process counts to pack, e.g. 1,2,4")
    a("--concurrent-size", type=int, default=64, help="px of the light trials (default 64)")
    a("--concurrent-steps", type=int, default=30, help="steps per light trial (default 30)")
    a("--data-dir", help="Fashion-MNIST idx files (default: STRIX_DATA_DIR, Debian path)")
    a("--out", help="write the results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.update(TF_ENV)  # before TensorFlow is imported
    args = build_parser().parse_args(argv)
    if args.command == "trial":
        return trial_child(args)
    setup_logging()
    out: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    if not args.skip_throughput:
        out["device"] = device()
        out["throughput"] = throughput(args)
        print(f"\ntraining throughput on {out['device']}, batch {args.batch}:")
        print(table(out["throughput"]))
    if args.concurrent:
        out["packing"] = [packing(n, args) for n in args.concurrent]
        print("\npacking light trials (ConvStrix) onto one device:")
        print(table(out["packing"]))
    print(f"\nmachine: {out['machine']}")
    save_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
