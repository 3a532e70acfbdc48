"""``strix mongo start|stop|status``: Strix's embedded MongoDB as a thing the user controls.

Without ``--mongo``, every command uses an embedded nx-27017 server on ``<home>/mongo``;
on its own, that server lives only as long as the command. ``strix mongo start`` keeps it
running in the background, so pymongo, mongosh and the queries in ``docs/results.md`` work
from any shell, and every later command finds it (through the marker in its data directory,
whatever its port) instead of starting its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.config import cli, defaults, settings
from shared.errors import ConfigError

PROG = "strix mongo"
EXIT_NOT_RUNNING = 3  # as `systemctl status`: a clean answer, distinct from an error
EXAMPLES = """
  strix mongo start                 # mongodb://127.0.0.1:27017, data in ~/.strix/mongo
  strix mongo start --port 27018    # another port (or STRIX_EMBEDDED_PORT=27018)
  strix mongo status                # running? where? (exit code 3 when it is not)
  strix mongo stop
"""


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(settings.resolve(args, ["home"])["home"]).expanduser() / "mongo"


def start(args: argparse.Namespace) -> int:
    from shared.store.embedded import is_listening, marked, start_embedded

    data_dir = _data_dir(args)
    running = marked(data_dir)
    if running is not None:
        print(f"already running: {running.url} (pid {running.pid}, data in {data_dir})")
        print(f"stop it with: {_stop_line(args)}")
        return cli.EXIT_OK
    port = settings.resolve(args, ["embedded_port"])["embedded_port"]
    host = defaults.EMBEDDED_HOST
    if is_listening(host, port):
        raise ConfigError(
            f"{host}:{port} is already taken by a server Strix did not start; start Strix's "
            f"own on another port: {PROG} start --port {port + 1}"
        )
    server = start_embedded(data_dir, host, port, background=True)
    print(f"Strix's MongoDB (nx-27017) runs in the background: {server.url}")
    print(f"  pid {server.process.pid}, data in {data_dir}, log {data_dir / 'nx-27017.log'}")
    print(f"  strix commands without --mongo use it; pymongo: MongoClient({server.url!r})")
    print(f"stop it with: {_stop_line(args)}")
    return cli.EXIT_OK


def _stop_line(args: argparse.Namespace) -> str:
    home = "" if args.home is None else f" --home {args.home}"
    return f"{PROG} stop{home}"


def stop(args: argparse.Namespace) -> int:
    from shared.store.embedded import marked, stop_marked

    data_dir = _data_dir(args)
    running = marked(data_dir)
    if running is not None and not running.background:  # a launch's own: not ours to end
        print(f"{running.url} belongs to a running strix command; it stops when that ends")
        return cli.EXIT_OK
    server = stop_marked(data_dir)
    if server is None:
        print(f"not running (no Strix server with its data in {data_dir})")
        return cli.EXIT_OK
    print(f"stopped {server.url} (pid {server.pid}); the data stays in {data_dir}")
    return cli.EXIT_OK


def status(args: argparse.Namespace) -> int:
    from shared.store.embedded import is_listening, marked

    data_dir = _data_dir(args)
    server = marked(data_dir)
    if server is not None:
        how = "in the background" if server.background else "for a running strix command"
        print(f"running {how}: {server.url} (pid {server.pid}, data in {data_dir})")
        return cli.EXIT_OK
    print(f"not running (data in {data_dir}); start it with: {PROG} start")
    port = settings.resolve(args, ["embedded_port"])["embedded_port"]
    if is_listening(defaults.EMBEDDED_HOST, port):
        print(
            f"note: {defaults.EMBEDDED_HOST}:{port} is answered by a server Strix did not "
            "start; commands without --mongo would use it"
        )
    return EXIT_NOT_RUNNING


ACTIONS = {"start": start, "stop": stop, "status": status}


def run(args: argparse.Namespace) -> int:
    return ACTIONS[args.action](args)


def build_parser() -> argparse.ArgumentParser:
    description = (
        "Start, stop or ask after Strix's embedded MongoDB (nx-27017), kept running in the "
        "background so that other shells and programs can reach it."
    )
    p = cli.new_parser(PROG, description, EXAMPLES)
    p.add_argument("action", choices=list(ACTIONS), help="what to do")
    settings.add(p, "embedded_port", "home")
    return p


def main(argv: list[str] | None = None) -> int:
    return cli.main(PROG, build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
