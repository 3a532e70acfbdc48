"""``strix dashboard``: optuna-dashboard on Strix's studies, live and read-only.

People who tune models expect a live page: the history of the objective, parallel
coordinates, parameter importance, per-epoch curves. optuna-dashboard draws all of that
from any Optuna storage, so this command serves it over
:class:`coordinator.optuna_bridge.storage.StrixStorage`, a read-only view of the store. Every
page polls the server; the storage re-reads MongoDB at most once per ``--ttl`` seconds,
however many pages are open.

Safe by default: it binds 127.0.0.1. Bound to any other address (``--host``) it asks
every page and API call for a token (:mod:`coordinator.optuna_bridge.access`): the one in
``STRIX_DASHBOARD_TOKEN``, or a new one printed once, in the login link of the start line.
Anything but GET/HEAD is refused before it reaches the storage (and the storage refuses
writes too). The MongoDB URI is printed only redacted and never reaches the page.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from coordinator.optuna_bridge.access import redact_token, token_gate
from shared.config import cli, defaults, settings
from shared.errors import ConfigError

log = logging.getLogger(__name__)

PROG = "strix dashboard"
TTL_S = 2.0
READ_ONLY = "the Strix dashboard is read-only: studies change only through Strix itself"

EXAMPLES = """
  # every study of the embedded/default MongoDB, on http://127.0.0.1:8080/dashboard
  python -m coordinator.dashboard
  # a cluster's database, on another port
  strix dashboard --mongo mongodb://strix:***@db:27017/?authSource=admin --port 8081
  # from your laptop, through an SSH tunnel to the head node (nothing else exposed)
  ssh -L 8080:127.0.0.1:8080 head-node   # then open http://127.0.0.1:8080 locally
  # every interface of this machine: every page asks for the token in the printed link
  STRIX_DASHBOARD_TOKEN=$(cat ~/.strix/dashboard-token) strix dashboard --host 0.0.0.0
  strix dashboard --host 0.0.0.0
"""

WSGIApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(
        PROG,
        "Serve optuna-dashboard over Strix's studies: live, read-only.",
        EXAMPLES,
        store=True,
    )
    a = p.add_argument
    settings.add(p, "dashboard_host", "dashboard_port")
    a("--ttl", type=float, default=TTL_S, help="seconds the store's answers are reused")
    a(
        "--allow-module",
        action="append",
        default=[],
        metavar="PKG",
        help="also read search spaces whose objective lives in this installed package",
    )
    return p


@dataclass(frozen=True)
class Access:
    """Where the dashboard listens and the token it asks for (None: loopback, no token)."""

    host: str
    port: int
    token: str | None = field(default=None, repr=False)
    generated: bool = False  # a new token, to be shown once in the start line


def resolve(args: argparse.Namespace) -> Access:
    """Host and port by Strix's priority (flag, environment, default); the token from the
    environment, or a new one when the dashboard listens beyond loopback."""
    v = settings.resolve(args, ["dashboard_host", "dashboard_port", "dashboard_token"])
    if args.ttl <= 0:
        raise ConfigError(f"--ttl must be a positive number of seconds, got {args.ttl:g}")
    host, port, token = str(v["dashboard_host"]), int(v["dashboard_port"]), v["dashboard_token"]
    if token is None and not is_loopback(host):
        return Access(host, port, secrets.token_urlsafe(32), generated=True)
    return Access(host, port, token)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def read_only(app: WSGIApp) -> WSGIApp:
    """Refuse every method that could write (create, rename, delete, notes, tell)."""

    def guarded(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD"):
            return app(environ, start_response)
        body = json.dumps({"reason": READ_ONLY}).encode()
        headers = [("Content-Type", "application/json"), ("Allow", "GET, HEAD")]
        start_response("405 Method Not Allowed", [*headers, ("Content-Length", str(len(body)))])
        return [body]

    return guarded


def make_server(storage: Any, host: str, port: int, token: str | None = None) -> Any:
    """A threaded WSGI server (a page fetches several things at once) on host:port."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
    from wsgiref.simple_server import make_server as wsgiref_server

    import optuna_dashboard

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            shown = redact_token(format % args)  # the login link's request line
            log.debug("%s %s", self.address_string(), shown)

    app = read_only(optuna_dashboard.wsgi(storage))
    if token is not None:
        app = token_gate(app, token)
    try:
        return wsgiref_server(host, port, app, server_class=Server, handler_class=Handler)
    except OSError as e:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port/--host"
        ) from None


def serve(args: argparse.Namespace) -> int:
    from coordinator.optuna_bridge.storage import StrixStorage
    from coordinator.study.stores import open_store

    access = resolve(args)
    store = open_store(args)
    try:
        storage = StrixStorage(store, ttl_s=args.ttl, allow_modules=args.allow_module)
        n = len(storage.get_all_studies())  # fails here, in one line, if MongoDB is not there
        server = make_server(storage, access.host, access.port, access.token)
        shown = f"[{access.host}]" if ":" in access.host else access.host
        url = f"http://{shown}:{server.server_port}/dashboard"
        if access.generated:  # the one place the token is ever shown
            url += f"?token={access.token} (the link logs you in; keep it secret)"
        elif access.token is not None:
            url += f" with the token in {defaults.ENV_DASHBOARD_TOKEN}"
        print(f"{PROG}: {n} studies in {store.target.redacted}; open {url} (Ctrl-C to stop)")
        sys.stdout.flush()
        try:
            server.serve_forever()
        finally:
            server.server_close()
    finally:
        store.close()
    return 0


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # docker stop / kill: leave like Ctrl-C


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM, the normal ways to stop a server: exit 0."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
    try:
        return serve(args)
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(PROG, build_parser, run, argv, level=logging.WARNING)


if __name__ == "__main__":
    raise SystemExit(main())
