"""ConvStrix epoch time per Keras backend on this machine, measured in one run.

Each backend runs ``bench.train --suite synthetic`` in its own process (a process can
hold only one Keras backend); an epoch is the 54,000 training images of a full study.

    python -m bench.backends                       # tensorflow and jax, 28 and 64 px
    python -m bench.backends --backends tensorflow,jax,torch --steps 50
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import ROOT, make_parser, start, table

EPOCH_IMAGES = 54_000
EXAMPLES = """
  python -m bench.backends
  python -m bench.backends --backends tensorflow,jax --sizes 28,64 --steps 40
"""


def measure(backend: str, sizes: str, steps: int, batch: int) -> list[dict]:
    """One backend's synthetic sweep, in a child process of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sweep.json"
        argv = [sys.executable, "-m", "bench.train", "--suite", "synthetic", "--backend"]
        argv += [backend, "--models", "convstrix", "--sizes", sizes, "--steps", str(steps)]
        argv += ["--batch", str(batch), "--out", str(out)]
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, text=True)
        rows = json.loads(out.read_text())["sweep"]
    return [
        {
            "backend": backend,
            "size": r["size"],
            "images_per_s": r["images_per_s"],
            "epoch_s": round(EPOCH_IMAGES / r["images_per_s"], 1),
        }
        for r in rows
    ]


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("python -m bench.backends", __doc__.splitlines()[0], EXAMPLES)
    p.add_argument("--backends", default="tensorflow,jax", help="comma-separated")
    p.add_argument("--sizes", default="28,64", help="px, comma-separated")
    p.add_argument("--steps", type=int, default=40, help="timed steps per size")
    p.add_argument("--batch", type=int, default=64, help="batch size")
    return p


def main(argv: list[str] | None = None) -> int:
    args = start(build_parser(), argv)
    rows = []
    for backend in args.backends.split(","):
        module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
        if importlib.util.find_spec(module) is None:
            print(f"{backend}: not installed, skipped")
            continue
        rows += measure(backend, args.sizes, args.steps, args.batch)
    base = {r["size"]: r["epoch_s"] for r in rows if r["backend"] == "tensorflow"}
    for r in rows:
        ref = base.get(r["size"])
        r["vs_tensorflow"] = round(ref / r["epoch_s"], 2) if ref and r["epoch_s"] else math.nan
    print(table(rows, ["backend", "size", "images_per_s", "epoch_s", "vs_tensorflow"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
