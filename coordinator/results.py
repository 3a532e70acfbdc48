"""``python -m coordinator.results``: where a study stands, from MongoDB alone.

It needs no TensorFlow and no access to the coordinator: anyone who can reach the
database can see the counts by state, the best trials so far and what each running
trial is doing (its epoch comes from the ``progress`` field the workers update after
every epoch). ``--watch`` redraws that view until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import datetime as dt
import io
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from coordinator.summary import format_table, top_trials
from shared import defaults
from shared.defaults import DB_HELP, setting
from shared.errors import ConfigError, StrixError
from shared.store import JOB_STATE_DONE, JOB_STATE_RUNNING, Store, connect

log = logging.getLogger("coordinator.results")

FORMATS = ("table", "json", "csv")
CLEAR = "\033[2J\033[H"
COUNT_KEYS = ("new", "running", "done", "failed", "error", "requeued", "total")
OVERVIEW_KEYS = ("exp_key", "model", *COUNT_KEYS, "best_val_accuracy", "best_tid")

EXAMPLES = """
examples:
  # one study: counts, the 10 best trials, the running ones (embedded/default MongoDB)
  python -m coordinator.results --exp-key convstrix-128px
  # a remote cluster, machine-readable
  python -m coordinator.results --exp-key convstrix-128px --format json \\
      --mongo mongodb://strix:***@db:27017/?authSource=admin
  # every study in the database, one line each; or just two of them
  python -m coordinator.results
  python -m coordinator.results --exp-key convstrix-128px --exp-key vggstrix-128px
  # a live view, redrawn every 5 s until Ctrl-C
  python -m coordinator.results --exp-key convstrix-128px --watch 5
  # the 50 best trials as CSV for a spreadsheet
  strix-results --exp-key convstrix-128px --top 50 --format csv > trials.csv
"""


# --- reading a study ---------------------------------------------------------------------


def as_epoch(value: Any) -> float | None:
    """Seconds since the epoch from a float, a datetime or nx-27017's stringified datetime.

    hyperopt's ``book_time`` is a naive UTC datetime; nx-27017 returns datetimes written by
    update operators as strings, and Strix's own ``started``/``ended`` are epoch floats.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.timestamp()
    return None


def study_counts(store: Store, exp_key: str) -> dict[str, int]:
    """Counts by state; ``done`` excludes finished-but-failed trials, which are ``failed``.

    ``new + running + done + failed + error == total``; ``requeued`` counts trials that were
    put back in the queue at least once (by a stopping worker or the reaper) whatever their
    state is now, so it overlaps the others.
    """
    raw = store.counts(exp_key)
    failed_query = {"exp_key": exp_key, "state": JOB_STATE_DONE, "result.status": "fail"}
    failed = len(store.find_jobs(failed_query, projection=["_id"]))
    requeued_query = {
        "exp_key": exp_key,
        "$or": [{"requeues": {"$gt": 0}}, {"attempts": {"$gt": 0}}],
    }
    requeued = len(store.find_jobs(requeued_query, projection=["_id"]))
    counts = {
        "new": raw["new"],
        "running": raw["running"],
        "done": raw["done"] - failed,
        "failed": failed,
        "error": raw["error"],
        "requeued": requeued,
    }
    counts["total"] = sum(raw.values())
    return counts


def running_trials(store: Store, exp_key: str, now: float | None = None) -> list[dict]:
    """What every running trial is doing: worker, epoch reached, time since it started."""
    now = time.time() if now is None else now
    docs = store.find_jobs(
        {"exp_key": exp_key, "state": JOB_STATE_RUNNING},
        projection=["tid", "worker", "owner", "progress", "spec", "started", "book_time"],
        sort=[("tid", 1)],
    )
    rows = []
    for doc in docs:
        worker, progress = doc.get("worker") or {}, doc.get("progress") or {}
        started = as_epoch(doc.get("started")) or as_epoch(doc.get("book_time"))
        budget = ((doc.get("spec") or {}).get("budget") or {}).get("max_epochs")
        rows.append(
            {
                "tid": doc.get("tid"),
                "host": worker.get("host") or doc.get("owner"),
                "gpu": worker.get("gpu"),
                "epoch": progress.get("epoch", 0),
                "max_epochs": budget,
                "val_accuracy": progress.get("val_accuracy"),
                "elapsed_s": None if started is None else round(max(0.0, now - started), 1),
            }
        )
    return rows


def study_model(store: Store, exp_key: str) -> str | None:
    docs = store.find_jobs({"exp_key": exp_key}, projection=["strix", "spec"], limit=1)
    if not docs:
        return None
    doc = docs[0]
    return (doc.get("strix") or {}).get("model") or (doc.get("spec") or {}).get("model")


def study_status(store: Store, exp_key: str, top: int = 10) -> dict:
    """Everything ``results`` shows for one study, as one JSON-safe dict."""
    counts = study_counts(store, exp_key)
    if counts["total"] == 0:
        known = store.exp_keys()
        raise ConfigError(
            f"study {exp_key!r} has no trials in {store.target.redacted}; known studies: "
            f"{', '.join(known) or 'none'} (check --exp-key, --mongo and --db)"
        )
    return {
        "exp_key": exp_key,
        "model": study_model(store, exp_key),
        "counts": counts,
        "top": top_trials(store, exp_key, top),
        "running": running_trials(store, exp_key),
    }


def overview(store: Store, exp_keys: list[str]) -> list[dict]:
    """One flat row per study: model, counts and the best validation accuracy so far."""
    rows = []
    for key in exp_keys:
        best = top_trials(store, key, 1)
        rows.append(
            {
                "exp_key": key,
                "model": study_model(store, key),
                **study_counts(store, key),
                "best_val_accuracy": best[0]["val_accuracy"] if best else None,
                "best_tid": best[0]["tid"] if best else None,
            }
        )
    return rows


# --- rendering ---------------------------------------------------------------------------


def render_status(status: dict) -> str:
    counts = status["counts"]
    head = f"study {status['exp_key']} ({status.get('model') or '?'}): " + ", ".join(
        f"{counts[k]} {k}" for k in COUNT_KEYS
    )
    parts = [head, "", f"top {len(status['top'])} trials:", format_table(status["top"])]
    if status["running"]:
        parts += ["", "running:", format_table(status["running"])]
    return "\n".join(parts)


def _csv(rows: list[dict]) -> str:
    flat = [{**{k: v for k, v in r.items() if k != "params"}, **r.get("params", {})} for r in rows]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue().rstrip("\n")


def render(store: Store, exp_keys: list[str], fmt: str, top: int) -> str:
    """One study: its full status; none or several: one line per study."""
    if len(exp_keys) == 1:
        status = study_status(store, exp_keys[0], top)
        if fmt == "json":
            return json.dumps(status, indent=2, default=str)
        if fmt == "csv":  # the top trials, one row each, params as columns
            return _csv(status["top"]) if status["top"] else ",".join(("tid", "val_accuracy"))
        return render_status(status)
    keys = exp_keys or store.exp_keys()
    rows = overview(store, keys)
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    if fmt == "csv":
        return _csv(rows) if rows else ",".join(OVERVIEW_KEYS)
    return format_table(rows, list(OVERVIEW_KEYS)) if rows else "(no studies in this database)"


def watch(
    produce: Callable[[], str], interval: float, count: int | None = None, out: Any = None
) -> None:
    """Redraw ``produce()`` every ``interval`` s until Ctrl-C (or ``count`` redraws).

    A store that goes away mid-watch is shown on screen and retried, not fatal: the
    point of a live view is to keep watching through a restart of the database.
    """
    out = out or sys.stdout
    shown = 0
    while count is None or shown < count:
        try:
            text = produce()
        except StrixError as e:
            text = f"error: {e} (retrying every {interval:g}s)"
        stamp = time.strftime("%H:%M:%S")
        out.write(f"{CLEAR}{text}\n\n{stamp}  refresh every {interval:g}s, Ctrl-C to quit\n")
        out.flush()
        shown += 1
        if count is None or shown < count:
            time.sleep(interval)


# --- CLI ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m coordinator.results",
        description="Show a Strix study from MongoDB: counts, best trials, running trials.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--exp-key", action="append", default=[], help="study name; repeat for several studies")
    add_store_args(p)
    a("--top", type=int, default=10, help="how many of the best trials to list (default 10)")
    a("--format", choices=FORMATS, default="table", help="table (default), json or csv")
    a(
        "--watch",
        nargs="?",
        type=float,
        const=5.0,
        metavar="SECONDS",
        help="redraw every SECONDS (default 5) until Ctrl-C",
    )
    a("--watch-count", type=int, help=argparse.SUPPRESS)  # stop after N redraws (tests)
    a("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _check(args: argparse.Namespace) -> None:
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    if args.watch is not None and args.watch <= 0:
        raise ConfigError(f"--watch needs a positive number of seconds, got {args.watch:g}")
    if args.watch_count is not None and args.watch_count < 1:
        raise ConfigError(f"--watch-count must be >= 1, got {args.watch_count}")


def add_store_args(p: argparse.ArgumentParser) -> None:
    """--mongo and --db, shared by results, final and report."""
    p.add_argument(
        "--mongo", help=f"MongoDB URI (env {defaults.ENV_MONGO}, default {defaults.MONGO_URL})"
    )
    p.add_argument(
        "--db", help=f"database, overriding the URI's (env {defaults.ENV_DB}; default: {DB_HELP})"
    )


def store_location(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(URI, database) by Strix's priority: flag, then environment; None means unset."""
    url = setting(args.mongo, defaults.ENV_MONGO, None)
    return url, setting(args.db, defaults.ENV_DB, None)  # type: ignore[return-value]


def open_store(args: argparse.Namespace) -> Store:
    """Connect to the store the flags name, or to the embedded default.

    After ``launch`` on the embedded default, its server is gone; this starts it again
    on the same data (``$STRIX_HOME/mongo``) for as long as the command runs.
    """
    url, db = store_location(args)
    if url is None:
        from coordinator.local import embedded_or_running

        stack = ExitStack()
        atexit.register(stack.close)
        url = embedded_or_running(defaults.strix_home(), stack)
    return connect(url, db)


def run(args: argparse.Namespace) -> int:
    _check(args)
    keys = list(dict.fromkeys(args.exp_key))
    store = open_store(args)
    try:
        if args.watch is None:
            print(render(store, keys, args.format, args.top))
        else:
            watch(lambda: render(store, keys, args.format, args.top), args.watch, args.watch_count)
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return run(args)
    except StrixError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: the reader has all it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
