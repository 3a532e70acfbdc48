"""Everything the coordinator starts on this host, and stops again on exit.

The embedded default: with no ``--mongo``, the server ``strix mongo start`` keeps running
on ``$STRIX_HOME/mongo``; else whatever answers on 127.0.0.1:``$STRIX_EMBEDDED_PORT``
(27017), said to be foreign; else an nx-27017 server for the command's lifetime on the same
data (so a study resumes after a restart). ``--local-workers N`` starts N worker
processes beside it.
"""

from __future__ import annotations

import logging
import subprocess
from contextlib import ExitStack
from pathlib import Path

from coordinator.study.procs import log_text, spawn, stop_procs
from shared.config import defaults
from shared.errors import ConfigError
from shared.store.embedded import EmbeddedServer, is_listening, marked, start_embedded

log = logging.getLogger(__name__)


def embedded_or_running(home: Path, stack: ExitStack, port: int | None = None) -> str:
    """URL of the local MongoDB, said once: the one ``strix mongo start`` left running on
    ``<home>/mongo``, else whatever answers on the embedded port (named as not Strix's own),
    else a new embedded server for as long as this command runs."""
    host, port = defaults.EMBEDDED_HOST, port or defaults.EMBEDDED_PORT
    data_dir = home / "mongo"
    ours = marked(data_dir)
    if ours is not None:
        how = "`strix mongo start`" if ours.background else "another strix command, until it ends"
        log.info("using Strix's embedded MongoDB on %s (started by %s)", ours.url, how)
        return ours.url
    if is_listening(host, port):
        log.warning(
            "using the MongoDB on %s:%d, which Strix did not start (no running server of "
            "its own in %s); pass --mongo URI to choose, or set %s to start Strix's own on "
            "another port",
            host,
            port,
            data_dir,
            defaults.ENV_EMBEDDED_PORT,
        )
        return f"mongodb://{host}:{port}"
    server: EmbeddedServer = start_embedded(data_dir, host, port)
    stack.callback(server.stop)
    log.info(
        "embedded MongoDB started on %s for this command (data in %s; `strix mongo start` "
        "keeps one running)",
        server.url,
        server.data_dir,
    )
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
