"""Run Strix's own commands as a user does, for the benches that time whole studies.

A bench that measures a study must pay what a user pays: worker start-up, data
preparation and the launch command's own bookkeeping. So these helpers start the real
entry points as subprocesses, with their home and caches inside the bench's work dir.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench import _common as common


def strix_env(work: Path) -> dict[str, str]:
    """The environment of a child command: its home and caches under ``work``."""
    from coordinator.study.procs import child_env

    extra = {"STRIX_HOME": str(work / "home"), "STRIX_CACHE_DIR": str(work / "cache")}
    return child_env({**extra, "TF_CPP_MIN_LOG_LEVEL": "2"})


def read_study(url: str, db: str, fields: list[str]) -> tuple[list[dict], dict]:
    """A finished bench study ("bench"): its trials (these fields) and its best trial ({}
    when none succeeded), read through the typed store API."""
    from shared.store import connect

    store = connect(url, db)
    try:
        docs = store.trials_in("bench", fields=fields)
        best = store.best("bench", 1)
    finally:
        store.close()
    return docs, best[0] if best else {}


def run_module(module: str, flags: list[str], work: Path, log_name: str) -> float:
    """``python -m module flags`` to completion, logged to ``work/logs``; its wall seconds."""
    log_path = work / "logs" / log_name
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", module, *flags],
            cwd=common.ROOT,
            env=strix_env(work),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{module} exited with {done.returncode}:\n{tail}")
    return time.monotonic() - started
