"""Child processes on this host: start ``python -m worker`` (or any module), wait, stop.

The one place that knows how Strix starts its own Python processes: the coordinator's
local workers (:class:`coordinator.study.local.LocalWorkers`), the benchmarks (``bench/``) and
the tests (``tests/helpers.py``) all start and stop them through these functions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # holds coordinator/, shared/, worker/ (and bench/)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child, unbuffered and able to import ``shared``,
    ``worker`` and ``bench`` from a source checkout; ``extra`` wins."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if ROOT.name not in ("site-packages", "dist-packages"):  # never put those before stdlib
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **(extra or {})}


def spawn(
    module: str,
    args: Sequence[Any],
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    **popen: Any,
) -> subprocess.Popen:
    """``python -m module args``; stdout and stderr appended to ``log_path`` (discarded
    without one, unless ``popen`` says otherwise, e.g. ``stdout=subprocess.PIPE``)."""
    cmd = [sys.executable, "-m", module, *(str(a) for a in args)]
    if log_path is None:
        opts = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, **popen}
        return subprocess.Popen(cmd, env=child_env(env), cwd=cwd, **opts)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(env), cwd=cwd, **popen
        )


def spawn_worker(
    url: str,
    db: str | None,
    args: Sequence[Any],
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
) -> subprocess.Popen:
    """One ``python -m worker [--db db] args`` process on MongoDB ``url`` (no ``--db``: the
    worker uses the URI's database). The URI travels in the child's environment
    (``STRIX_MONGO``), never on its command line, which any user can read (``ps``)."""
    from shared.config import defaults

    db_flag = ["--db", db] if db else []
    env = {**(env or {}), defaults.ENV_MONGO: url}
    return spawn("worker", [*db_flag, *args], log_path, env, cwd)


def stop_procs(procs: Iterable[subprocess.Popen], timeout: float = 30.0) -> None:
    """SIGTERM each process still running, wait ``timeout``, then SIGKILL what is left.
    Only ever the processes the caller started."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is truthy (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_log(
    proc: subprocess.Popen, log_path: Path, needle: str, timeout: float = 120.0
) -> None:
    """Block until ``needle`` appears in the log; RuntimeError if the process dies first
    or the line does not come within ``timeout``."""

    def logged() -> bool:
        if needle in log_text(log_path):
            return True
        if proc.poll() is not None:
            tail = log_text(log_path)[-2000:]
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode}:\n{tail}")
        return False

    if not wait_until(logged, timeout, interval=0.05):
        raise RuntimeError(f"process {proc.pid} did not log {needle!r} within {timeout:.0f}s")
