"""Everything the coordinator starts on this host, and stops again on exit.

The embedded default: with no ``--mongo`` and nothing listening on 127.0.0.1:27017, an
nx-27017 server starts with its data under ``$STRIX_HOME/mongo`` (so a study resumes
after a restart), and ``--local-workers N`` starts N worker processes beside it.
"""

from __future__ import annotations

import logging
import subprocess
from contextlib import ExitStack
from pathlib import Path

from coordinator.study.procs import log_text, spawn, stop_procs
from shared.config import defaults
from shared.errors import ConfigError
from shared.store.embedded import EmbeddedServer, is_listening, start_embedded

log = logging.getLogger(__name__)


def embedded_or_running(home: Path, stack: ExitStack) -> str:
    """URL of the local MongoDB: one already on the default port, else a new embedded one."""
    host, port = defaults.EMBEDDED_HOST, defaults.EMBEDDED_PORT
    if is_listening(host, port):
        log.info("using the MongoDB already listening on %s:%d", host, port)
        return f"mongodb://{host}:{port}"
    server: EmbeddedServer = start_embedded(home / "mongo", host, port)
    stack.callback(server.stop)
    log.info("embedded MongoDB started on %s (data in %s)", server.url, server.data_dir)
    return server.url


class LocalWorkers:
    """N ``python -m worker`` processes, logging to ``<log_dir>/worker-<i>.log``.

    ``log_dir`` is per study: the launcher passes ``$STRIX_HOME/logs/<exp_key>``, so two
    studies never append to the same files. ``args`` is the worker's command line; the
    MongoDB URI goes in ``env`` (``STRIX_MONGO``), never in ``args``: a command line is
    world-readable, and the URI may hold a password. ``env`` is added to this process's.
    """

    def __init__(self, n: int, args: list[str], log_dir: Path, env: dict | None = None) -> None:
        self.n, self.args, self.log_dir = n, args, log_dir
        self.env = dict(env or {})
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        log.info("starting %d local worker(s); their logs go to %s", self.n, self.log_dir)
        self.procs = [self._spawn(i) for i in range(self.n)]

    def _log(self, i: int) -> Path:
        return self.log_dir / f"worker-{i}.log"

    def _spawn(self, i: int) -> subprocess.Popen:
        return spawn("worker", self.args, self._log(i), self.env)

    def check(self) -> None:
        """Restart a worker that died (its trial is requeued by the reaper meanwhile).

        Exit code 2 is a configuration error: restarting cannot help, so it stops the study.
        """
        for i, proc in enumerate(self.procs):
            if proc.poll() is None:
                continue
            if proc.returncode == 2:
                raise ConfigError(f"local worker {i} refused to start: {self._last_error(i)}")
            log.warning("local worker %d exited with %s; restarting it", i, proc.returncode)
            self.procs[i] = self._spawn(i)

    def _last_error(self, i: int) -> str:
        lines = log_text(self._log(i)).splitlines()
        errors = [line for line in lines if "error:" in line]
        return (errors or lines or ["(no output)"])[-1].strip()

    def stop(self, timeout: float = 30.0) -> None:
        stop_procs(self.procs, timeout)
