"""``python -m bench.pipeline``: the data pipeline's cost, fidelity and memory.

Three questions, one section each:

1. Time: resizing all 70,000 Fashion-MNIST images to each size with OpenCV (Strix's
   ``shared.data.resize_images``, bicubic) against ``tf.image.resize(method="bicubic")``,
   plus Strix's whole ``prepare`` (decompress, resize, write the uint8 cache).
2. Fidelity: upsample the 10,000 test images 28 -> 128 px with each method, come back to
   28 px, and compare with the original (PSNR, dB). Coming back with ``INTER_AREA`` (a box
   filter, the same for both) isolates the upsampler; coming back with the method itself
   is the full round trip. A PNG grid shows originals, both upsamples and their difference.
3. Memory: the 2nd, 3rd, 4th worker-like process on one host, each reading every image
   once (as an epoch does), from the shared uint8 memmap cache (``shared.data.load``) or
   from its own float32 copy (what ``x.astype("float32") / 255`` code does). "Extra" is
   the growth of the summed PSS (``/proc/<pid>/smaps_rollup``) when that process starts:
   shared pages are split between the processes mapping them, so it counts them once.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import (
    OUT_DIR,
    QUIET_TF,
    add_quick,
    machine,
    make_parser,
    parse,
    save_json,
    setup_logging,
    smaps_rollup,
)
from bench._common import table as fmt_table
from coordinator.study.procs import spawn

log = logging.getLogger(__name__)

EXAMPLES = """
  python -m bench.pipeline                                  # 28/64/128 px, memory at 64 px
  python -m bench.pipeline --quick                          # 28 px, 2 processes at 28 px
  python -m bench.pipeline --sizes 28,64 --skip-memory
  python -m bench.pipeline --mem-size 128 --mem-procs 4     # needs ~19 GB for float32
  python -m bench.pipeline --data-dir /usr/share/datasets/fashion-mnist --json out.json
"""
CHUNK = 2048
QUICK = {"sizes": "28", "mem_size": "28", "mem_procs": "2"}


def all_images(data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(all 70k images, the 10k test images), uint8 (N, 28, 28)."""
    from shared.data.idx import load_raw

    x_train, _, x_test, _ = load_raw(data_dir)
    return np.concatenate([x_train, x_test]), x_test


def opencv_resize(images: np.ndarray, size: int, interpolation: str = "cubic") -> np.ndarray:
    from shared.data.cache import resize_images

    return resize_images(images, size, interpolation)[..., 0]


def tf_resize(images: np.ndarray, size: int) -> np.ndarray:
    """``tf.image.resize`` bicubic, chunked, rounded and clipped back to uint8 like OpenCV."""
    import tensorflow as tf

    out = np.empty((len(images), size, size), np.uint8)
    for start in range(0, len(images), CHUNK):
        chunk = images[start : start + CHUNK, :, :, None].astype(np.float32)
        resized = tf.image.resize(chunk, (size, size), method="bicubic").numpy()[..., 0]
        out[start : start + CHUNK] = np.clip(np.rint(resized), 0, 255)
    return out


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def time_sizes(images: np.ndarray, sizes: list[int], data_dir: str | None) -> list[dict]:
    from shared.data.cache import prepare
    from shared.data.spec import DataSpec

    tf_resize(images[:CHUNK], 32)  # TensorFlow's start-up is not the resize's cost
    rows = []
    for size in sizes:
        cv_s, _ = _timed(opencv_resize, images, size)
        tf_s, _ = _timed(tf_resize, images, size)
        with tempfile.TemporaryDirectory(prefix="strix-prep-") as cache:
            spec = DataSpec(image_size=size)
            prep_s, _ = _timed(prepare, spec, data_dir=data_dir, cache_dir=cache)
        rows.append(
            {
                "size_px": size,
                "images": len(images),
                "opencv_s": cv_s,
                "tf_s": tf_s,
                "tf/opencv": tf_s / cv_s,
                "strix_prepare_s": prep_s,
            }
        )
        log.info("%d px: opencv %.2fs, tf %.2fs, prepare %.2fs", size, cv_s, tf_s, prep_s)
    return rows


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def fidelity(test: np.ndarray, out_dir: Path, big: int = 128) -> list[dict]:
    up = {"opencv": opencv_resize(test, big), "tf": tf_resize(test, big)}
    down_same = {"opencv": opencv_resize(up["opencv"], 28), "tf": tf_resize(up["tf"], 28)}
    rows = [
        {
            "method": m,
            "psnr_via_area_db": psnr(opencv_resize(up[m], 28, "area"), test),
            "psnr_round_trip_db": psnr(down_same[m], test),
        }
        for m in up
    ]
    rows.append(
        {
            "method": f"opencv vs tf at {big}px",
            "psnr_via_area_db": psnr(*up.values()),
            "psnr_round_trip_db": float("nan"),
        }
    )
    grid(test, up, out_dir / "pipeline-grid.png")
    return rows


def grid(test: np.ndarray, up: dict[str, np.ndarray], path: Path, n: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["original 28px", "OpenCV cubic 128px", "tf bicubic 128px", "|OpenCV - tf| x8"]
    fig, axes = plt.subplots(n, 4, figsize=(8, 2 * n))
    for row, i in enumerate(range(0, n * 997, 997)):
        diff = np.abs(up["opencv"][i].astype(int) - up["tf"][i].astype(int)) * 8
        for col, img in enumerate([test[i], up["opencv"][i], up["tf"][i], np.clip(diff, 0, 255)]):
            axes[row, col].imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            axes[row, col].set_axis_off()
            if row == 0:
                axes[row, col].set_title(cols[col], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"saved {path}")


# --- memory ----------------------------------------------------------------------------------


def mem_child(args: argparse.Namespace) -> int:
    """A worker-like process: load the data one way, read every image once, then wait."""
    from shared.data.cache import load
    from shared.data.spec import DataSpec

    ds = load(DataSpec(image_size=args.size), data_dir=args.data_dir, cache_dir=args.cache_dir)
    arrays = [ds.x_train, ds.x_val, ds.x_test]
    if args.mode == "float32":
        arrays = [np.asarray(a, np.float32) / 255.0 for a in arrays]
    total = 0.0
    for a in arrays:
        for start in range(0, len(a), 4096):
            total += float(a[start : start + 4096].sum())
    print(f"ready {total:.0f}", flush=True)
    sys.stdin.read()  # hold the memory until the parent closes our stdin
    return 0


def memory(size: int, procs: int, data_dir: str | None, cache_dir: str) -> list[dict]:
    from shared.data.cache import load
    from shared.data.spec import DataSpec

    load(DataSpec(image_size=size), data_dir=data_dir, cache_dir=cache_dir)  # build the cache
    rows = []
    for mode in ("memmap", "float32"):
        children: list[subprocess.Popen] = []
        prev = 0
        try:
            for k in range(1, procs + 1):
                children.append(_start_mem_child(mode, size, data_dir, cache_dir))
                stats = [smaps_rollup(c.pid) for c in children]
                total = sum(s["Pss"] for s in stats)
                rows.append(
                    {
                        "mode": mode,
                        "process": k,
                        "rss_mb": stats[-1]["Rss"] / 1024,
                        "private_mb": stats[-1]["Private"] / 1024,
                        "sum_pss_mb": total / 1024,
                        "extra_mb": (total - prev) / 1024,
                    }
                )
                prev = total
        finally:
            for c in children:
                c.communicate(timeout=60)
    return rows


def _start_mem_child(
    mode: str, size: int, data_dir: str | None, cache_dir: str
) -> subprocess.Popen:
    argv = ["mem-child", "--mode", mode, "--size", size, "--cache-dir", cache_dir]
    argv += ["--data-dir", data_dir] if data_dir else []
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": None, "text": True}
    proc = spawn("bench.pipeline", argv, env=QUIET_TF, **pipes)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("ready"):
        proc.kill()
        raise RuntimeError(f"memory child ({mode}) failed: {line!r}, exit {proc.wait()}")
    return proc


# --- CLI ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        "python -m bench.pipeline",
        "Resize speed and fidelity (OpenCV vs tf.image.resize) and the memory of the shared "
        "uint8 cache against per-process float32 arrays.",
        EXAMPLES,
    )
    sub = p.add_subparsers(dest="command")
    child = sub.add_parser("mem-child", help="internal: one worker-like process")
    child.add_argument("--mode", choices=["memmap", "float32"], required=True)
    child.add_argument("--size", type=int, required=True)
    child.add_argument("--cache-dir", required=True)
    child.add_argument("--data-dir")
    a = p.add_argument
    a("--sizes", default="28,64,128", help="sizes to time, px (default 28,64,128)")
    a("--mem-size", type=int, default=64, help="px for the memory test (default 64)")
    a("--mem-procs", type=int, default=4, help="worker-like processes (default 4)")
    a("--skip-memory", action="store_true")
    a("--skip-time", action="store_true")
    a("--data-dir", help="Fashion-MNIST idx files (default: STRIX_DATA_DIR, Debian path)")
    a("--out-dir", default=str(OUT_DIR), help=f"grid PNG goes here (default {OUT_DIR})")
    a("--json", help="write the results here")
    add_quick(p, QUICK)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv, QUICK)
    if args.command == "mem-child":
        return mem_child(args)
    setup_logging()
    info = machine()
    images, test = all_images(args.data_dir)
    out: dict = {"machine": info, "args": vars(args)}
    if not args.skip_time:
        out["time"] = time_sizes(images, [int(s) for s in args.sizes.split(",")], args.data_dir)
        print("\nresize all 70k images (s):\n" + fmt_table(out["time"]))
        out["fidelity"] = fidelity(test, Path(args.out_dir))
        print("\n28 -> 128 -> 28 px on the 10k test images (PSNR, dB):")
        print(fmt_table(out["fidelity"]))
    if not args.skip_memory:
        with tempfile.TemporaryDirectory(prefix="strix-mem-") as cache:
            out["memory"] = memory(args.mem_size, args.mem_procs, args.data_dir, cache)
        print(f"\nmemory per worker-like process at {args.mem_size}px (MB):")
        print(fmt_table(out["memory"]))
    print(f"\nmachine: {info}")
    save_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
