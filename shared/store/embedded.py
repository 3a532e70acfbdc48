"""The embedded MongoDB: an nx-27017 wire-protocol server on loopback.

It lets Strix run end to end on a laptop or in CI with no Docker and no ``mongod``.
Production uses the official ``mongo`` image; the gaps between the two are handled in
:mod:`shared.store` and listed in ``docs/mongodb.md``.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import StoreUnavailable

log = logging.getLogger(__name__)


def is_listening(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class EmbeddedServer:
    """A running nx-27017 process that this Strix process started and must stop."""

    process: subprocess.Popen
    host: str
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def start_embedded(
    data_dir: Path, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0
) -> EmbeddedServer:
    """Start nx-27017 with its SQLite files under ``data_dir`` and wait until it answers.

    ``port=0`` picks a free port. The data survives restarts on the same ``data_dir``,
    which is what makes a study resumable on the embedded default.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    cmd = [
        sys.executable,
        "-m",
        "nx_27017.nx_27017",
        "--data-dir",
        str(data_dir),
        "--host",
        host,
        "-p",
        str(port),
        "--log-file",
        str(data_dir / "nx-27017.log"),
        "--pid-file",
        str(data_dir / "nx-27017.pid"),
    ]
    log.info("starting embedded MongoDB (nx-27017) on %s:%d, data in %s", host, port, data_dir)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StoreUnavailable(
                f"the embedded MongoDB (nx-27017) exited with code {proc.returncode} "
                f"on {host}:{port}; see {data_dir / 'nx-27017.log'}"
            )
        if is_listening(host, port):
            return EmbeddedServer(proc, host, port, data_dir)
        time.sleep(0.05)
    proc.kill()
    raise StoreUnavailable(f"the embedded MongoDB did not answer on {host}:{port} in {timeout}s")
