"""``python -m coordinator.results``: where a study stands, from MongoDB alone.

It needs no TensorFlow and no access to the coordinator: anyone who can reach the
database can see the counts by state, the best trials so far and what each running
trial is doing (its epoch comes from the ``progress`` field the workers update after
every epoch). ``--watch`` redraws that view until Ctrl-C. Trials a pruner stopped early
are ok trials, counted as ``pruned`` and marked by the epoch they stopped at (``pruned_at``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from coordinator.study.stores import open_store, store_location
from coordinator.study.summary import (
    as_epoch,
    common_reasons,
    failed_trials,
    format_table,
    pruned_trials,
    reasons_text,
    top_trials,
)
from shared.config import cli, settings
from shared.errors import ConfigError, StrixError
from shared.store import State, Store

log = logging.getLogger("coordinator.results")

PROG = "strix results"
FORMATS = ("table", "json", "csv")
CLEAR = "\033[2J\033[H"
COUNT_KEYS = ("queued", "running", "ok", "failed", "error", "requeued", "pruned", "total")
STATES = ("ok", "failed", "running", "pruned")
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
  # the failed trials, each with the reason its worker recorded
  strix results --exp-key convstrix-128px --state failed
  # the 50 best trials as CSV for a spreadsheet
  strix-results --exp-key convstrix-128px --top 50 --format csv > trials.csv
  # the final model of trial 17, one of the --keep-best trials, as a Keras file
  strix results --exp-key convstrix-128px --export 17 trial-17.keras
"""


# --- reading a study ---------------------------------------------------------------------


def study_counts(store: Store, exp_key: str) -> dict[str, int]:
    """Trials by outcome, counted by the server: ``ok``, ``failed`` (a result with status
    fail) and ``error`` apart. ``queued + running + ok + failed + error == total``;
    ``requeued`` counts trials put back in the queue at least once (by a stopping worker
    or the reaper) whatever their state is now, so it overlaps the others; ``pruned``
    counts the ``ok`` trials that a pruner stopped early.
    """
    counts = store.tally(exp_key)
    counts["total"] = sum(counts.values())
    counts["requeued"] = store.count(exp_key, requeued=True)
    counts["pruned"] = store.count_pruned(exp_key)
    return counts


def running_trials(store: Store, exp_key: str, now: float | None = None) -> list[dict]:
    """What every running trial is doing: worker, epoch reached, time since it started."""
    now = store.server_time() if now is None else now  # `started` is the server's time
    fields = ["worker", "owner", "progress", "spec", "started", "book_time"]
    docs = store.trials_in(exp_key, [State.RUNNING], fields)
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
    docs = store.trials_in(exp_key, fields=["strix", "spec"], limit=1)
    if not docs:
        return None
    doc = docs[0]
    return (doc.get("strix") or {}).get("model") or (doc.get("spec") or {}).get("model")


def study_status(store: Store, exp_key: str, top: int = 10) -> dict:
    """Everything ``results`` shows for one study, as one JSON-safe dict."""
    counts = study_counts(store, exp_key)
    if counts["total"] == 0:
        known = store.studies()
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
        "failed": failed_trials(store, exp_key) if counts["failed"] + counts["error"] else [],
        "pruned": pruned_trials(store, exp_key) if counts["pruned"] else [],
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
    if status["failed"]:
        reasons = reasons_text(common_reasons(status["failed"]))
        parts += ["", f"failed: {len(status['failed'])} ({reasons}); see --state failed"]
    if status["pruned"]:
        rules = ", ".join(sorted({str(r["rule"]) for r in status["pruned"]}))
        n = len(status["pruned"])
        parts += ["", f"pruned: {n} of the ok trials ({rules}); see --state pruned"]
    return "\n".join(parts)


def render_state(status: dict, state: str, fmt: str) -> str:
    """``--state``: only the study's ok, failed, running or pruned trials, one row each."""
    rows = {
        "ok": status["top"],
        "failed": status["failed"],
        "running": status["running"],
        "pruned": status["pruned"],
    }[state]
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    if fmt == "csv":
        return _csv(rows) if rows else "tid"
    if not rows:
        return f"(no {state} trials)"
    if state == "failed":
        return "\n".join(f"trial {r['tid']}: {r['reason']}" for r in rows)
    return format_table(rows)


def _csv(rows: list[dict]) -> str:
    flat = [{**{k: v for k, v in r.items() if k != "params"}, **r.get("params", {})} for r in rows]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue().rstrip("\n")


def render(store: Store, exp_keys: list[str], fmt: str, top: int, state: str | None = None) -> str:
    """One study: its full status; none or several: one line per study."""
    if len(exp_keys) == 1:
        status = study_status(store, exp_keys[0], top)
        if state is not None:
            return render_state(status, state, fmt)
        if fmt == "json":
            return json.dumps(status, indent=2, default=str)
        if fmt == "csv":  # the top trials, one row each, params as columns
            return _csv(status["top"]) if status["top"] else ",".join(("tid", "val_accuracy"))
        return render_status(status)
    keys = exp_keys or store.studies()
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
    description = "Show a Strix study from MongoDB: counts, best, failed and running trials."
    p = cli.new_parser(PROG, description, EXAMPLES, store=True)
    a = p.add_argument
    a("--exp-key", action="append", default=[], help="study name; repeat for several studies")
    a("--top", type=int, default=10, help="how many of the best trials to list")
    a("--format", choices=FORMATS, default="table", help="output format")
    a("--state", choices=STATES, help="list only this study's ok, failed, running or pruned trials")
    a(
        "--watch",
        nargs="?",
        type=float,
        const=5.0,
        metavar="SECONDS",
        help="redraw every SECONDS (5 when given alone) until Ctrl-C",
    )
    a("--watch-count", type=int, help=argparse.SUPPRESS)  # stop after N redraws (tests)
    a(
        "--export",
        nargs=2,
        metavar=("TID", "PATH"),
        help="write the final model of trial TID (one of the workers' --keep-best trials) "
        "to PATH, a new .keras file",
    )
    return p


def export_model(store: Store, exp_key: str, tid: str, path: str) -> str:
    """Write a kept trial's final model to a new ``.keras`` file; returns what was done."""
    from pathlib import Path

    if not tid.isdigit():
        raise ConfigError(
            f"--export TID must be a trial number, got {tid!r}; e.g. --export 17 m.keras"
        )
    out = Path(path).expanduser()
    if out.suffix != ".keras" or out.exists():
        raise ConfigError(
            f"--export PATH must be a new file ending in .keras, got {path!r}; "
            "pick another name (an existing file is never overwritten)"
        )
    try:
        blob = store.kept_model(exp_key, int(tid))
    except StrixError:
        raise ConfigError(
            f"trial {tid} of {exp_key!r} kept no final model: only the workers' --keep-best "
            f"best trials (default 3) keep theirs; `strix results --exp-key {exp_key}` lists "
            "the best tids"
        ) from None
    out.write_bytes(blob)
    return f"wrote trial {tid} of {exp_key} to {out} ({len(blob)} bytes)"


def add_store_args(p: argparse.ArgumentParser) -> None:
    """--mongo and --db (for commands not yet on shared.config.cli.new_parser)."""
    settings.add(p, "mongo", "db")


def _check(args: argparse.Namespace) -> None:
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    if args.watch is not None and args.watch <= 0:
        raise ConfigError(f"--watch needs a positive number of seconds, got {args.watch:g}")
    if args.watch_count is not None and args.watch_count < 1:
        raise ConfigError(f"--watch-count must be >= 1, got {args.watch_count}")
    if args.state is not None and len(args.exp_key) != 1:
        raise ConfigError("--state shows one study: give exactly one --exp-key")
    if args.export is not None and len(args.exp_key) != 1:
        raise ConfigError("--export takes a trial of one study: give exactly one --exp-key")
    store_location(args)  # a bad --mongo/--db/environment fails before any connection


def run(args: argparse.Namespace) -> int:
    _check(args)
    keys = list(dict.fromkeys(args.exp_key))
    store = open_store(args)
    try:
        show = lambda: render(store, keys, args.format, args.top, args.state)  # noqa: E731
        if args.export is not None:
            print(export_model(store, keys[0], *args.export))
        elif args.watch is None:
            print(show())
        else:
            watch(show, args.watch, args.watch_count)
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(PROG, build_parser, run, argv, level=logging.WARNING)


if __name__ == "__main__":
    raise SystemExit(main())
