"""Helpers the benchmarks share: their command lines, tables, /proc readings.

Benchmarks run from the repository root (``python -m bench.NAME``); the ``bench`` folder is
not installed, so child processes are started by :mod:`coordinator.study.procs` with the
repository root on their ``PYTHONPATH``. The fault-injection harness is
:mod:`bench.faults.harness`.
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
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "out" / "bench"  # /out/ is git-ignored


QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # for children that may import TensorFlow


def local_data_dir() -> str | None:
    """Fashion-MNIST beside the checkout (``../shared/data/fashion-mnist``) when it is there,
    for benches whose workers must not download it."""
    path = ROOT.parent / "shared" / "data" / "fashion-mnist"
    return str(path) if path.is_dir() else None


def make_parser(prog: str, description: str, examples: str) -> argparse.ArgumentParser:
    """A bench's parser; its ``--help`` ends with the ``examples:`` block."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="examples:\n" + examples.strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_quick(parser: argparse.ArgumentParser, preset: dict[str, Any]) -> None:
    """``--quick``: the smallest run that still exercises every part of the bench."""
    shown = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in preset.items())
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {shown}")


def parse(
    parser: argparse.ArgumentParser, argv: list[str] | None, quick: dict[str, Any]
) -> argparse.Namespace:
    """Parse ``argv``; with ``--quick``, ``quick`` replaces the defaults (flags still win)."""
    args = parser.parse_args(argv)
    if getattr(args, "quick", False):
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    return args


def setup_logging(verbose: bool = False) -> None:
    """Entry points only: one line per record, quiet third-party loggers."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("hyperopt", "absl", "pymongo", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def start(
    parser: argparse.ArgumentParser, argv: list[str] | None, quick: dict[str, Any] | None = None
) -> argparse.Namespace:
    """How a bench's ``main`` begins: its arguments (``quick`` as in :func:`parse`), then
    the logging setup, so a bad flag fails before any log line."""
    args = parse(parser, argv, quick or {})
    setup_logging()
    return args


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A plain fixed-width table (markdown-compatible) of ``rows``."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    return "\n".join([line, rule, *body])


def machine() -> dict[str, Any]:
    """What the figures were measured on, for the JSON output and the docs."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = ""
    if shutil.which("nvidia-smi"):
        res = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        gpus = "; ".join(res.stdout.strip().splitlines())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return {
        "date": date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpus": gpus or "none",
        "python": platform.python_version(),
        "load_1min_at_start": round(load, 2),
    }


def smaps_rollup(pid: int) -> dict[str, int]:
    """Rss, Pss, Private_* (kB) of one process from ``/proc/<pid>/smaps_rollup``."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0])
    out["Private"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def save_json(path: str | Path | None, payload: dict) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    print(f"saved {path}")
