"""Plain-text summaries of a study: the top-trials table printed by launch and results."""

from __future__ import annotations

from typing import Any

from shared.store import JOB_STATE_DONE, Store


def _flat(params: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def top_trials(store: Store, exp_key: str, n: int = 10) -> list[dict]:
    """The ``n`` best finished trials, best first, as flat rows."""
    docs = store.find_jobs(
        {"exp_key": exp_key, "state": JOB_STATE_DONE, "result.status": "ok"},
        projection=["tid", "result", "spec", "worker", "started", "ended"],
    )
    docs.sort(key=lambda d: d["result"].get("loss", float("inf")))
    return [trial_row(d) for d in docs[:n]]


def trial_row(doc: dict) -> dict:
    result = doc.get("result") or {}
    worker = doc.get("worker") or {}
    start, end = doc.get("started"), doc.get("ended")
    duration = end - start if start and end else result.get("train_seconds")
    params = (doc.get("spec") or {}).get("params", {})
    return {
        "tid": doc.get("tid"),
        "loss": result.get("loss"),
        "val_accuracy": result.get("val_accuracy"),
        "epochs": result.get("epochs"),
        "seconds": round(duration, 1) if duration is not None else None,
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
