"""How a coordinator command finds its store: the flags, else the embedded default."""

from __future__ import annotations

import argparse
import atexit
from contextlib import ExitStack
from pathlib import Path

from shared.config import settings
from shared.store import Store, connect


def store_location(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(URI, database) by Strix's priority: flag, then environment; None means unset."""
    v = settings.resolve(args, ["mongo", "db"])
    return v["mongo"], v["db"]


def open_store(args: argparse.Namespace) -> Store:
    """Connect to the store the flags name, or to the embedded default.

    After ``launch`` on the embedded default, its server is gone; this starts it again
    on the same data (``<home>/mongo``) for as long as the command runs.
    """
    url, db = store_location(args)
    if url is None:
        from coordinator.study.local import embedded_or_running

        stack = ExitStack()
        atexit.register(stack.close)
        v = settings.resolve(args, ["home", "embedded_port"])
        url = embedded_or_running(Path(v["home"]).expanduser(), stack, v["embedded_port"])
    return connect(url, db)
