"""Training throughput of Strix's models on one GPU, and what packing trials onto it buys.

Strix lets "light" trials share a GPU on the belief that one small ConvStrix leaves most
of a modern GPU idle. This script measures that belief: (1) images/s of ``model.fit`` for
ConvStrix and VGGStrix at several image sizes, one process alone; (2) N identical
ConvStrix processes training at once on the same GPU against one alone (aggregate images/s
and the packing speed-up). The backend is chosen before Keras is imported, so the same
figures can come from TensorFlow (Strix's own) or JAX (where TF's CUDA build cannot go).
Synthetic images stand in for Fashion-MNIST: throughput does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: shared/ lives in ROOT
    sys.path.insert(0, str(ROOT))

log = logging.getLogger(__name__)

HEAD = {"fcl_num_layers": 2, "fcl_layer_size": 768, "fcl_dropout_rate": 0.3, "activation": "relu"}
EPILOG = """examples:
  # CPU smoke test with TensorFlow (Strix's backend)
  python bench/gpu_train.py --sizes 32 --steps 3 --concurrent 1
  # GPU figures with Keras on JAX: sizes, then 1/2/4 ConvStrix processes sharing the GPU
  KERAS_BACKEND=jax python bench/gpu_train.py --backend jax --sizes 32,64,128 \\
      --concurrent 1,2,4 --out bench/results/gpu.json
"""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers like 1,2,4") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be >= 1")
    return values


def params_for(model: str, size: int) -> dict[str, Any]:
    """The fixed, representative trial: mid-range of each model's Part III space."""
    if model == "convstrix":
        from shared.spaces import max_blocks

        return {"num_blocks": min(4, max_blocks(size)), "block_size": 2, **HEAD}
    return {"conv": {"num_blocks": 1, "block_size": 2}, **HEAD}


def synthetic(n: int, size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Random pixels: Strix feeds float32 tensors holding uint8 values, and labels 0..9."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, size, size, channels), dtype=np.uint8)
    return x.astype("float32"), rng.integers(0, 10, size=(n,), dtype=np.int32)


def time_fit(
    model_name: str,
    size: int,
    batch: int,
    steps: int,
    warmup: int,
    barrier: Callable[[], None] | None = None,
) -> dict:
    """Build, compile, warm up (compilation), [wait at ``barrier``], time ``steps`` steps."""
    import keras

    from shared.models import build_model, get_model

    channels = get_model(model_name).channels
    params = params_for(model_name, size)
    model = build_model(model_name, params, image_size=size, channels=channels, weights=None)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    pool = min(steps, 25)  # batches held in memory; more steps = more epochs over them
    x, y = synthetic(pool * batch, size, channels)
    n_warm = min(warmup, pool) * batch
    t0 = time.perf_counter()
    model.fit(x[:n_warm], y[:n_warm], batch_size=batch, epochs=1, verbose=0, shuffle=False)
    warm_s = time.perf_counter() - t0
    if barrier is not None:
        barrier()
    epochs = math.ceil(steps / pool)
    start = time.time()
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=False)
    elapsed = time.perf_counter() - t0
    images = epochs * pool * batch
    keras.backend.clear_session()
    return {
        "model": model_name,
        "size": size,
        "channels": channels,
        "batch": batch,
        "params": params,
        "steps": epochs * pool,
        "images": images,
        "warmup_s": round(warm_s, 3),
        "seconds": round(elapsed, 4),
        "images_per_s": round(images / elapsed, 1),
        "t_start": start,
        "t_end": start + elapsed,
    }


def device_info(backend: str) -> dict[str, Any]:
    import keras

    info: dict[str, Any] = {"backend": backend, "keras": keras.__version__}
    if backend == "jax":
        import jax

        info |= {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        info |= {"tensorflow": tf.__version__, "devices": [d.name for d in gpus] or ["CPU"]}
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout
        info["nvidia_smi"] = out.strip().splitlines()[1:]
    return info


def run_child(args: argparse.Namespace) -> None:
    """One packed trial: warm up, say ready, wait for the common start, time, report."""
    sync = Path(args.sync_dir)

    def barrier() -> None:
        (sync / f"ready-{os.getpid()}").touch()
        deadline = time.monotonic() + 600
        while not (sync / "go").exists():
            if time.monotonic() > deadline:
                raise SystemExit("child: no start signal within 600 s")
            time.sleep(0.005)

    size, batch = args.sizes[0], args.batch
    result = time_fit("convstrix", size, batch, args.steps, args.warmup, barrier)
    print("RESULT " + json.dumps(result), flush=True)


def child_env(backend: str, mem_fraction: float) -> dict[str, str]:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env |= {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    env |= {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{mem_fraction:.3f}"
    return env


def run_packed(args: argparse.Namespace, n: int, size: int, steps: int) -> dict:
    """``n`` child processes; they all warm up first, then start their timed fit together."""
    with tempfile.TemporaryDirectory(prefix="strix-gpu-") as sync:
        flags = f"--child --backend {args.backend} --sizes {size} --batch {args.batch}"
        flags += f" --steps {steps} --warmup {args.warmup} --sync-dir {sync}"
        cmd = [sys.executable, str(Path(__file__).resolve()), *flags.split()]
        env = child_env(args.backend, args.mem_fraction)
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
            for _ in range(n)
        ]
        try:
            while len(list(Path(sync).glob("ready-*"))) < n:
                if any(p.poll() not in (None, 0) for p in procs):
                    raise RuntimeError(f"a packed child failed (n={n}); see its stderr above")
                time.sleep(0.05)
            (Path(sync) / "go").touch()
            outs = [p.communicate(timeout=600)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    lines = [line for out in outs for line in out.splitlines()]
    results = [json.loads(line[7:]) for line in lines if line.startswith("RESULT ")]
    if len(results) != n:
        raise RuntimeError(f"expected {n} results from packed children, got {len(results)}")
    span = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    images = sum(r["images"] for r in results)
    return {
        "processes": n,
        "size": size,
        "steps_each": results[0]["steps"],
        "wall_s": round(span, 3),
        "aggregate_images_per_s": round(images / span, 1),
        "per_process_images_per_s": [r["images_per_s"] for r in results],
    }


def packing(args: argparse.Namespace) -> list[dict]:
    size = args.concurrent_size or max(args.sizes)
    steps = args.concurrent_steps or args.steps
    counts = sorted(set(args.concurrent) | {1})  # one alone is the baseline
    rows = []
    for n in counts:
        log.info("packing: %d ConvStrix process(es) at %d px", n, size)
        rows.append(run_packed(args, n, size, steps))
    single = rows[0]["aggregate_images_per_s"]
    for row in rows:
        row["speedup"] = round(row["aggregate_images_per_s"] / single, 3)
    return [r for r in rows if r["processes"] in args.concurrent]


def print_tables(sweep: list[dict], packed: list[dict]) -> None:
    print(f"\n{'model':<10} {'size':>5} {'batch':>5} {'steps':>6} {'warmup s':>9} {'images/s':>10}")
    for r in sweep:
        print(
            f"{r['model']:<10} {r['size']:>5} {r['batch']:>5} {r['steps']:>6} "
            f"{r['warmup_s']:>9.1f} {r['images_per_s']:>10.1f}"
        )
    if packed:
        print(f"\n{'procs':>5} {'size':>5} {'aggregate img/s':>16} {'speed-up':>9}  per process")
        for r in packed:
            each = ", ".join(f"{v:.0f}" for v in r["per_process_images_per_s"])
            print(
                f"{r['processes']:>5} {r['size']:>5} {r['aggregate_images_per_s']:>16.1f} "
                f"{r['speedup']:>9.2f}  {each}"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--backend",
        choices=["tensorflow", "jax", "torch"],
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        help="Keras backend (default: $KERAS_BACKEND, else tensorflow)",
    )
    p.add_argument("--models", default="convstrix,vggstrix", help="comma-separated models")
    p.add_argument("--sizes", type=_int_list, default=[32, 64, 128], help="image sides in px")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--steps", type=int, default=100, help="timed training steps per cell")
    p.add_argument("--warmup", type=int, default=5, help="warm-up steps (compilation)")
    p.add_argument(
        "--concurrent",
        type=_int_list,
        default=[],
        help="process counts to pack onto the GPU, e.g. 1,2,4 (default: none)",
    )
    p.add_argument("--concurrent-size", type=int, help="px for packing (default: max size)")
    p.add_argument("--concurrent-steps", type=int, help="steps per packed process")
    p.add_argument(
        "--mem-fraction",
        type=float,
        default=0.2,
        help="XLA_PYTHON_CLIENT_MEM_FRACTION per packed JAX process",
    )
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sync-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(args.models) - {"convstrix", "vggstrix"}
    if unknown or args.steps < 1 or args.batch < 1 or args.warmup < 1:
        p.error(
            f"models must be convstrix/vggstrix (got {sorted(unknown)}); "
            "steps, batch and warmup must be >= 1"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend  # before any keras import
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    level = logging.WARNING if args.child else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    if args.child:
        run_child(args)
        return
    from shared.errors import StrixError

    try:
        packed = packing(args) if args.concurrent else []  # before this process holds the GPU
        sweep = []
        for name in args.models:
            for size in args.sizes:
                log.info("timing %s at %d px", name, size)
                sweep.append(time_fit(name, size, args.batch, args.steps, args.warmup))
    except StrixError as exc:
        raise SystemExit(f"gpu_train: {exc}") from None
    print_tables(sweep, packed)
    report = {
        "date": date.today().isoformat(),
        "host": platform.node(),
        "python": platform.python_version(),
        **device_info(args.backend),
        "warmup_steps": args.warmup,
        "sweep": [{k: v for k, v in r.items() if not k.startswith("t_")} for r in sweep],
        "packing": packed,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
