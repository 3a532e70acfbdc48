"""The embedded MongoDB: an nx-27017 wire-protocol server on loopback.

It lets Strix run end to end on a laptop or in CI with no Docker and no ``mongod``.
Production uses the official ``mongo`` image; the gaps between the two are handled in
:mod:`shared.store` and listed in ``docs/mongodb.md``.

Whoever starts a server writes a marker, ``strix-server.json``, into its data directory
(pid, host, port) and removes it on stop. That is how Strix tells its own server from a
foreign one listening on the same port, and how a command in a new shell finds the server
``strix mongo start`` left running in the background, whatever port it chose.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import StoreUnavailable

log = logging.getLogger(__name__)
MARKER = "strix-server.json"


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
        _forget(self.data_dir, self.process.pid)
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


@dataclass(frozen=True)
class Marked:
    """A server some Strix process started on ``data_dir``, found through its marker."""

    pid: int
    host: str
    port: int
    data_dir: Path
    background: bool  # started by ``strix mongo start``: it outlives the command

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "nx-27017.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, and not ours
        return True
    return True


def marked(data_dir: Path) -> Marked | None:
    """The server whose marker is in ``data_dir``, if its process lives and it answers."""
    try:
        info = json.loads((Path(data_dir) / MARKER).read_text())
        server = Marked(
            int(info["pid"]), info["host"], int(info["port"]), Path(data_dir), info["background"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _alive(server.pid) and is_listening(server.host, server.port):
        return server
    return None


def _mark(data_dir: Path, pid: int, host: str, port: int, background: bool) -> None:
    info = {"pid": pid, "host": host, "port": port, "background": background}
    tmp = data_dir / (MARKER + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(data_dir / MARKER)  # atomic: a reader sees the old marker or the new one


def _forget(data_dir: Path, pid: int) -> None:
    """Remove the marker if it still names ``pid`` (a newer server may have replaced it)."""
    path = Path(data_dir) / MARKER
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def stop_marked(data_dir: Path, timeout: float = 10.0) -> Marked | None:
    """Stop the server marked in ``data_dir`` (SIGTERM, then SIGKILL); None if none runs."""
    server = marked(data_dir)
    if server is None:
        return None
    os.kill(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(server.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(server.pid):
        os.kill(server.pid, signal.SIGKILL)
    _forget(data_dir, server.pid)
    return server


def start_embedded(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 30.0,
    background: bool = False,
) -> EmbeddedServer:
    """Start nx-27017 with its SQLite files under ``data_dir`` and wait until it answers.

    ``port=0`` picks a free port. The data survives restarts on the same ``data_dir``,
    which is what makes a study resumable on the embedded default. ``background`` starts
    it in its own session, so it outlives this process and the terminal's Ctrl-C.
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
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=background
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StoreUnavailable(
                f"the embedded MongoDB (nx-27017) exited with code {proc.returncode} "
                f"on {host}:{port}; see {data_dir / 'nx-27017.log'}"
            )
        if is_listening(host, port):
            _mark(data_dir, proc.pid, host, port, background)
            return EmbeddedServer(proc, host, port, data_dir)
        time.sleep(0.05)
    proc.kill()
    raise StoreUnavailable(f"the embedded MongoDB did not answer on {host}:{port} in {timeout}s")
