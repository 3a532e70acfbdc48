"""Plain-text summaries of a study: the top-trials table, the failure reasons, the
pruned trials (ok trials a pruner stopped early, marked by their ``pruned_at`` epoch)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from shared.store import State, Store

TRIAL_FIELDS = ["tid", "result", "spec", "worker", "started", "ended", "error"]


def _flat(params: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def top_trials(store: Store, exp_key: str, n: int = 10) -> list[dict]:
    """The ``n`` best finished trials, best first, as flat rows (sorted by the server)."""
    return [trial_row(d) for d in store.best(exp_key, n, TRIAL_FIELDS)]


def failed_trials(store: Store, exp_key: str) -> list[dict]:
    """Every trial that failed (a result with status fail) or errored, with its reason."""
    docs = store.trials_in(exp_key, [State.DONE], TRIAL_FIELDS, outcome="failed")
    docs += store.trials_in(exp_key, [State.ERROR], TRIAL_FIELDS)
    return [{**trial_row(d), "reason": reason_of(d)} for d in sorted(docs, key=lambda d: d["tid"])]


def pruned_trials(store: Store, exp_key: str) -> list[dict]:
    """Every trial the study's pruner stopped: where, its value and what it was below."""
    docs = store.trials_in(exp_key, [State.DONE], TRIAL_FIELDS, outcome="ok")
    rows = []
    for doc in docs:
        result = doc.get("result") or {}
        if result.get("pruned"):
            judged = result.get("pruning") or {}
            compared = judged.get("compared") or []
            rows.append(
                {
                    **trial_row(doc),
                    "rule": judged.get("rule"),
                    "threshold": judged.get("threshold"),
                    "compared_with": len(compared),
                }
            )
    return rows


def reason_of(doc: dict) -> str:
    """Why a trial did not succeed, in the words the worker recorded."""
    result, error = doc.get("result") or {}, doc.get("error") or []
    reason = result.get("reason") or (error[-1] if error else None)
    return " ".join(str(reason or "no reason recorded").split())


def common_reasons(rows: list[dict], n: int = 3, width: int | None = 120) -> list[tuple[str, int]]:
    """The ``n`` most frequent failure reasons, each cut to ``width`` characters (None:
    whole)."""
    counts = Counter(r["reason"][:width] for r in rows)
    return counts.most_common(n)


def no_success_text(store: Store, exp_key: str) -> str | None:
    """For a study that ended without one ok trial: why, in full (the most common reason,
    not cut), and where to read the others; None when some trial succeeded."""
    if store.tally(exp_key)["ok"]:
        return None
    rows = failed_trials(store, exp_key)
    if not rows:
        return f"study {exp_key} ended without any finished trial"
    (reason, count), *_ = common_reasons(rows, 1, width=None)
    return (
        f"study {exp_key} ended without one ok trial; the most common reason ({count} of "
        f"{len(rows)} failed): {reason}\n(all of them: strix results --exp-key {exp_key} "
        "--state failed)"
    )


def reasons_text(reasons: list[tuple[str, int]]) -> str:
    return "; ".join(f"{count}x {reason}" for reason, count in reasons)


def trial_seconds(doc: dict) -> float | None:
    """A trial's seconds, one definition for results, report and the dashboard: its wall
    time on the worker, from reservation to stored result (model build and data loading
    included, what a user waits for); for jobs without both stamps, the training time the
    result recorded. Rounded to 0.1 s."""
    start, end = as_epoch(doc.get("started")), as_epoch(doc.get("ended"))
    seconds = end - start if start is not None and end is not None else None
    if seconds is None:
        recorded = (doc.get("result") or {}).get("train_seconds")
        seconds = float(recorded) if isinstance(recorded, int | float) else None
    return None if seconds is None else round(seconds, 1)


def trial_row(doc: dict) -> dict:
    result = doc.get("result") or {}
    worker = doc.get("worker") or {}
    params = (doc.get("spec") or {}).get("params", {})
    return {
        "tid": doc.get("tid"),
        "loss": result.get("loss"),
        "val_accuracy": result.get("val_accuracy"),
        "epochs": result.get("epochs"),
        "pruned_at": result.get("pruned_at_epoch"),  # None: the trial was not pruned
        "seconds": trial_seconds(doc),
        "host": worker.get("host"),
        "gpu": worker.get("gpu"),
        "params": _flat(params),
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A fixed-width text table; nested ``params`` become their own columns."""
    if not rows:
        return "(no finished trials yet)"
    flat = [{**{k: v for k, v in r.items() if k != "params"}, **r.get("params", {})} for r in rows]
    columns = columns or list(dict.fromkeys(k for r in flat for k in r))
    cells = [[_cell(r.get(c)) for c in columns] for r in flat]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


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
