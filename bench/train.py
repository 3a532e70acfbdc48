"""``python -m bench.train``: training throughput, and what packing light trials buys.

Strix lets light trials share a device on the belief that one small ConvStrix leaves most
of it idle. Two measurements, on any Keras backend (``--backend``; it is set before Keras
is imported, so GPU figures can come from JAX where TensorFlow's CUDA build cannot go):

1. images/s of ``model.fit`` for ConvStrix and VGGStrix (``weights=None``: throughput does
   not depend on the weights' values) at each size, batch 64, one process, after warm-up
   steps that absorb tracing and compilation.
2. ``--concurrent 1,2,4``: N ConvStrix trials as N separate processes on the same device.
   Every process is started and warmed up before the clock runs, so process start and
   compilation are not counted.

``--suite`` picks the inputs and what packing is compared with:

- ``real`` (default; the CPU tables of docs/benchmarks.md section 3): real Fashion-MNIST
  batches resized like the cache (OpenCV bicubic), models at their builders' defaults
  (ConvStrix: 4 blocks of one conv, one 1024-unit dense layer; VGGStrix: frozen VGG19
  plus the same head). Packing runs the same N processes one at a time, then all at once:
  speed-up = (sum of the one-at-a-time times) / (makespan of all at once).
- ``synthetic`` (the GPU tables, ``bench/results/gpu-*.json``): random pixels, one
  mid-range trial per model (ConvStrix: 4 blocks of 2 convs, 2x768 dense; VGGStrix: frozen
  VGG19 + 1 block of 2 convs). Packing runs N processes at once against one alone:
  speed-up = aggregate images/s / one process's.

Each process sets ``TF_FORCE_GPU_ALLOW_GROWTH`` (and, under JAX, no preallocation and
``--mem-fraction``) so N processes can share one GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
from datetime import date
from typing import Any

from bench._common import add_quick, machine, make_parser, parse, save_json, setup_logging, table
from bench._trainer import Trainer, device_info
from coordinator.study.procs import spawn, stop_procs, wait_until

log = logging.getLogger(__name__)

EXAMPLES = """
  python -m bench.train                                   # both models at 32/64/128 px
  python -m bench.train --quick                           # ConvStrix 32 px, 3 steps, 1-2 procs
  python -m bench.train --models convstrix --sizes 32 --steps 5
  python -m bench.train --skip-throughput --concurrent 1,2,4 --out out/bench/train.json
  python -m bench.train --concurrent 1,2,4 --concurrent-size 128 --concurrent-steps 50
  # GPU figures with Keras on JAX: sizes, then 1/2/4 ConvStrix processes sharing the GPU
  python -m bench.train --suite synthetic --backend jax --sizes 32,64,128 \\
      --concurrent 1,2,4 --out bench/results/gpu.json
"""
SUITES = ("real", "synthetic")
BACKENDS = ("tensorflow", "jax", "torch")
SUITE_DEFAULTS: dict[str, dict[str, Any]] = {
    "real": {"steps": 10, "warmup": 2, "concurrent_size": 64, "concurrent_steps": 30},
    "synthetic": {"steps": 100, "warmup": 5, "concurrent_size": None, "concurrent_steps": None},
}
COLUMNS = {
    "real": ["model", "size_px", "params", "batch", "images", "seconds", "images_per_s"],
    "synthetic": ["model", "size", "batch", "steps", "warmup_s", "images_per_s"],
}
QUICK = {"models": "convstrix", "sizes": "32", "steps": "3", "warmup": "1"}
QUICK |= {"concurrent": "1,2", "concurrent_size": "32", "concurrent_steps": "3"}


def sweep_row(suite: str, r: dict[str, Any]) -> dict[str, Any]:
    """One throughput row in each suite's JSON layout."""
    if suite == "real":
        keys = ("model", "batch", "images", "seconds", "images_per_s")
        return {**{k: r[k] for k in keys}, "size_px": r["size"], "params": r["param_count"]}
    return {
        **{k: r[k] for k in ("model", "size", "channels", "batch", "params", "steps", "images")},
        "warmup_s": round(r["warmup_s"], 3),
        "seconds": round(r["seconds"], 4),
        "images_per_s": round(r["images_per_s"], 1),
    }


def throughput(args: argparse.Namespace) -> list[dict]:
    rows = []
    for model in args.models:
        for size in args.sizes:
            trainer = Trainer(args.suite, model, size, args.batch, args.warmup, args.data_dir)
            row = trainer.timed(args.steps)
            rows.append(sweep_row(args.suite, row))
            log.info("%s %dpx: %.1f images/s", model, size, row["images_per_s"])
            trainer.keras.backend.clear_session()
    return rows


# --- packing light trials ----------------------------------------------------------------------


def trial_child(args: argparse.Namespace) -> int:
    """A warmed-up light trial that trains ``--steps`` steps each time it reads ``go``."""
    trainer = Trainer(args.suite, args.model, args.size, args.batch, args.warmup, args.data_dir)
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() == "go":
            print("RESULT " + json.dumps(trainer.timed(args.steps)), flush=True)
    return 0


def trial_env(args: argparse.Namespace, child: bool = True) -> dict[str, str]:
    env = {"KERAS_BACKEND": args.backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    if child:  # the parent keeps JAX's defaults for its own sweep
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{args.mem_fraction:.3f}"
    return env


def _read(proc: subprocess.Popen, prefix: str) -> str:
    """The rest of the child's next line that starts with ``prefix`` (others are skipped)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise RuntimeError(f"a trial process ended without {prefix.strip()} (exit {proc.wait()})")


def _spawn_trials(n: int, args: argparse.Namespace) -> list[subprocess.Popen]:
    flags = {
        "--suite": args.suite,
        "--backend": args.backend,
        "--size": args.concurrent_size,
        "--batch": args.batch,
        "--steps": args.concurrent_steps,
        "--warmup": args.warmup,
    }
    if args.data_dir:
        flags["--data-dir"] = args.data_dir
    argv = ["trial", *(str(x) for pair in flags.items() for x in pair)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": None, "text": True}
    procs = [spawn("bench.train", argv, env=trial_env(args), **pipes) for _ in range(n)]
    for p in procs:
        _read(p, "READY")
    return procs


def _go(procs: list[subprocess.Popen]) -> list[dict]:
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    return [json.loads(_read(p, "RESULT ")) for p in procs]


def _close(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.stdin is not None:
            p.stdin.close()  # the child's read loop ends, and so does the child
    wait_until(lambda: all(p.poll() is not None for p in procs), 120)
    stop_procs(procs)


def _span(results: list[dict]) -> float:
    return max(r["t_end"] for r in results) - min(r["t_start"] for r in results)


def pack_real(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The same ``n`` processes one at a time, then all at once."""
    procs = _spawn_trials(n, args)
    try:
        alone = [_go([p])[0] for p in procs]
        together = _go(procs)
    finally:
        _close(procs)
    sequential, makespan = sum(r["seconds"] for r in alone), _span(together)
    return {
        "processes": n,
        "size_px": args.concurrent_size,
        "steps": args.concurrent_steps,
        "one_at_a_time_s": sequential,
        "all_at_once_s": makespan,
        "speedup": sequential / makespan,
        "alone_images_per_s": sum(r["images"] for r in alone) / sequential,
        "packed_images_per_s": sum(r["images"] for r in together) / makespan,
    }


def pack_synthetic(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """``n`` fresh processes, all at once (the speed-up is set against n = 1 later)."""
    procs = _spawn_trials(n, args)
    try:
        results = _go(procs)
    finally:
        _close(procs)
    span = _span(results)
    return {
        "processes": n,
        "size": args.concurrent_size,
        "steps_each": results[0]["steps"],
        "wall_s": round(span, 3),
        "aggregate_images_per_s": round(sum(r["images"] for r in results) / span, 1),
        "per_process_images_per_s": [round(r["images_per_s"], 1) for r in results],
    }


def packing(args: argparse.Namespace) -> list[dict]:
    if args.suite == "real":
        return [pack_real(n, args) for n in args.concurrent]
    rows = []
    for n in sorted(set(args.concurrent) | {1}):  # one alone is the baseline
        log.info("packing: %d ConvStrix process(es) at %d px", n, args.concurrent_size)
        rows.append(pack_synthetic(n, args))
    single = rows[0]["aggregate_images_per_s"]
    for row in rows:
        row["speedup"] = round(row["aggregate_images_per_s"] / single, 3)
    return [r for r in rows if r["processes"] in args.concurrent]


# --- CLI ---------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers like 1,2,4") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers like 1,2,4")
    return values


def _add_trial_parser(p: argparse.ArgumentParser) -> None:
    t = p.add_subparsers(dest="command").add_parser("trial", help="internal: one light trial")
    t.add_argument("--suite", choices=SUITES, default="real")
    t.add_argument("--backend", choices=BACKENDS, default="tensorflow")
    t.add_argument("--model", default="convstrix")
    for flag, default in (("--size", 64), ("--batch", 64), ("--steps", 30), ("--warmup", 2)):
        t.add_argument(flag, type=int, default=default)
    t.add_argument("--data-dir")


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        "python -m bench.train",
        "Training images/s of ConvStrix/VGGStrix, and the speed-up of packing light trials "
        "onto one device.",
        EXAMPLES,
    )
    _add_trial_parser(p)
    a = p.add_argument
    a("--suite", choices=SUITES, default="real", help="real data or synthetic (default real)")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    a("--backend", choices=BACKENDS, default=backend, help="default $KERAS_BACKEND or tensorflow")
    a("--models", default="convstrix,vggstrix", help="default convstrix,vggstrix")
    a("--sizes", type=_ints, default=[32, 64, 128], help="px (default 32,64,128)")
    a("--batch", type=int, default=64, help="batch size (default 64)")
    a("--steps", type=int, help="timed steps per model and size (default 10; synthetic 100)")
    a("--warmup", type=int, help="untimed steps first (default 2; synthetic 5)")
    a("--skip-throughput", action="store_true", help="only the --concurrent part")
    a("--concurrent", type=_ints, default=[], help="process counts to pack, e.g. 1,2,4")
    a("--concurrent-size", type=int, help="px of packed trials (default 64; synthetic: max size)")
    a(
        "--concurrent-steps",
        type=int,
        help="steps per packed trial (default 30; synthetic: --steps)",
    )
    a("--mem-fraction", type=float, default=0.2, help="JAX: GPU memory per packed process")
    a("--data-dir", help="Fashion-MNIST idx files (default: STRIX_DATA_DIR, Debian path)")
    a("--out", help="write the results as JSON here")
    add_quick(p, QUICK)
    return p


def resolve(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Fill the suite's defaults; refuse what cannot run."""
    for key, value in SUITE_DEFAULTS[args.suite].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.concurrent_size = args.concurrent_size or max(args.sizes)
    args.concurrent_steps = args.concurrent_steps or args.steps
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(args.models) - {"convstrix", "vggstrix"}
    if args.suite == "synthetic" and unknown:
        p.error(f"--suite synthetic knows convstrix/vggstrix, not {sorted(unknown)}")
    if args.steps < 1 or args.batch < 1 or args.warmup < 0:
        p.error("--steps and --batch must be >= 1, --warmup >= 0")
    return args


def report(args: argparse.Namespace, sweep: list[dict], packed: list[dict]) -> dict:
    """Print the tables; the JSON payload in the suite's layout."""
    info, gpus = device_info(args.backend)
    device = f"GPU x{gpus}" if gpus else f"CPU ({os.cpu_count()} cores)"
    if sweep:
        print(f"\ntraining throughput on {device} ({args.backend}), batch {args.batch}:")
        print(table(sweep, COLUMNS[args.suite]))
    if packed:
        print("\npacking light trials (ConvStrix) onto one device:")
        print(table(packed))
    if args.suite == "synthetic":
        host = {"date": date.today().isoformat(), "host": platform.node()}
        return {**host, "python": platform.python_version(), **info, "warmup_steps": args.warmup}
    out: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    if sweep:
        out["device"] = device
    print(f"\nmachine: {out['machine']}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = parse(p, argv, QUICK)
    if args.command == "trial":  # the parent set the rest of the environment
        os.environ["KERAS_BACKEND"] = args.backend
        return trial_child(args)
    os.environ.update(trial_env(args, child=False))  # before anything imports Keras
    setup_logging()
    resolve(p, args)
    from shared.errors import StrixError

    try:
        packed = packing(args) if args.concurrent else []  # before this process holds a GPU
        sweep = [] if args.skip_throughput else throughput(args)
        out = report(args, sweep, packed)
    except StrixError as exc:
        raise SystemExit(f"bench.train: {exc}") from None
    if args.suite == "synthetic":
        out |= {"sweep": sweep, "packing": packed}
    else:
        out |= {"throughput": sweep} if sweep else {}
        out |= {"packing": packed} if packed else {}
    save_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
