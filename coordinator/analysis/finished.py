"""What ``final`` and ``report`` need of a study before they start: that it exists and
has a successful trial, which data it ran on, and where their outputs go.

A study records its data source (``{"dir": ..., "hash": ...}``, written by ``launch`` in
every job's ``strix.data_source``). Without ``--data-dir`` / ``$STRIX_DATA_DIR`` the
commands use that directory while it still exists; when the files there (or wherever
the data now comes from) hash differently, they say so instead of mixing data silently.
Without a record they behave as before: the Debian package, then a download.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from coordinator.study.stores import store_location
from shared.errors import ConfigError, DataError
from shared.store import Store, parse_target

log = logging.getLogger(__name__)


def safe_name(exp_key: str) -> str:
    """The study name as a folder name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in exp_key)


def check_out_dir(path: Path, flag: str = "--out") -> Path:
    """Refuse an output folder that cannot be made or written, before any work starts."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file; pass a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {parent} is not writable; pass a folder you can write")
    return path


def check_store_flags(args: argparse.Namespace) -> None:
    """A malformed --mongo/--db (flag or environment) fails before any connection."""
    url, db = store_location(args)
    if url is not None:
        parse_target(url, db)


def no_success(store: Store, exp_key: str) -> ConfigError:
    """The error for a study without a successful trial, naming what it does have."""
    tally = store.tally(exp_key)
    if not any(tally.values()):
        known = ", ".join(store.studies()) or "none"
        return ConfigError(
            f"study {exp_key!r} has no trials in {store.target.redacted}; known studies: "
            f"{known} (check --exp-key, --mongo and --db)"
        )
    counts = ", ".join(f"{n} {state}" for state, n in tally.items())
    if tally["queued"] or tally["running"]:
        hint = f"wait for trials to finish (`strix results --exp-key {exp_key} --watch 10`)"
    else:
        hint = f"see why they failed: `strix results --exp-key {exp_key} --state failed`"
    return ConfigError(f"study {exp_key!r} has no successful trial yet ({counts}); {hint}")


# --- the study's data -------------------------------------------------------------------


def choose_data_dir(data_dir: str | None, recorded: dict | None, exp_key: str) -> str | None:
    """``data_dir`` when given; else the study's recorded directory while it exists."""
    old = (recorded or {}).get("dir")
    if data_dir is not None or not old:
        return data_dir
    if Path(old).is_dir():
        log.info("study %s: using the data it recorded, in %s", exp_key, old)
        return str(old)
    log.warning("study %s ran on data in %s, which is gone; looking elsewhere", exp_key, old)
    return None


def changed_source(recorded: dict | None, current: str | None, where: str) -> str | None:
    """One line saying the data differs from the study's, or None when it does not."""
    old = (recorded or {}).get("hash")
    if not old or not current or old == current:
        return None
    ran_on = f" in {recorded['dir']}" if recorded and recorded.get("dir") else ""
    return (
        f"the data changed since the study ran: it recorded sha256 {old[:12]}...{ran_on}, "
        f"but {where} hashes to {current[:12]}...; results are not comparable with its "
        "trials (pass --data-dir with the study's copy to compare)"
    )


def current_hash(recorded: dict | None) -> str | None:
    """The hash of the files in the study's recorded directory now, if it still exists."""
    old = (recorded or {}).get("dir")
    if not old or not Path(old).is_dir():
        return None
    from shared.data.idx import load_raw, source_hash

    try:
        return source_hash(load_raw(old))
    except (DataError, OSError) as exc:  # a half-deleted copy: report what we know
        log.warning("cannot hash the study's data in %s: %s", old, exc)
        return None
