"""``python -m coordinator.report``: plots, a rank-correlation table and ``report.md``.

The report answers the questions the seeds ask of a study: did the search converge
(loss per trial with the best so far), which hyper-parameters matter (each one against
validation accuracy, and their Spearman correlation with it, after Sánchez Acosta &
Keith's Table 2), how the best trials learned (validation accuracy per epoch), and, once
``coordinator.final`` has run, how the final model does per class on the test set.

Parameters are read from ``misc.vals``, hyperopt's own encoding of a trial: a numeric
parameter is its sampled value, a ``hp.choice`` is the index of the chosen option. Rank
correlation on a choice index is meaningful when the options are listed in increasing
order (batch_size, fcl_layer_size: the index ranks like the value); for unordered options
(optimizer, activation) only the size of rho says something, its sign depends on the
option order of the space. A parameter inactive in a trial (a conditional branch not
taken) is left out for that trial only.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from coordinator.results import add_store_args, open_store, study_counts
from coordinator.summary import top_trials
from shared import defaults
from shared.errors import ConfigError, StrixError
from shared.store import Store
from shared.store import exports as stored

log = logging.getLogger("coordinator.report")

TOP_CURVES = 5
EXAMPLES = """
examples:
  python -m coordinator.report --exp-key convstrix-128px --out reports/convstrix
  python -m coordinator.report --exp-key vggstrix-128px --out /tmp/vgg \\
      --mongo mongodb://strix:***@db:27017/?authSource=admin
"""


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- data ----------------------------------------------------------------------------------


def load_trials(store: Store, exp_key: str) -> list[dict]:
    docs = store.find_jobs(
        {"exp_key": exp_key},
        projection=["tid", "state", "result", "spec", "misc", "owner"],
        sort=[("tid", 1)],
    )
    if not docs:
        raise ConfigError(
            f"study {exp_key!r} has no trials in {store.target.redacted}; known studies: "
            f"{', '.join(store.exp_keys()) or 'none'}"
        )
    return docs


def is_ok(doc: dict) -> bool:
    result = doc.get("result") or {}
    return result.get("status") == "ok" and result.get("val_accuracy") is not None


def _shown_params(doc: dict) -> dict:
    """The trial's params by label: top-level values (a branch choice such as VGGStrix's
    ``conv`` is a dict there) over the flattened ones (labels nested inside a branch)."""
    from shared.spaces import flatten

    params = dict((doc.get("spec") or {}).get("params") or {})
    return {**flatten(params), **params}


def encode(docs: list[dict]) -> dict[str, dict]:
    """Per hyper-parameter label: kind, encoded values per tid and option names of choices."""
    params: dict[str, dict] = {}
    for doc in docs:
        flat = _shown_params(doc)
        for label, vals in ((doc.get("misc") or {}).get("vals") or {}).items():
            entry = params.setdefault(label, {"kind": "numeric", "values": {}, "options": {}})
            if not vals:  # inactive in this trial (a conditional branch not taken)
                continue
            value = float(vals[0])
            entry["values"][doc.get("tid")] = value
            shown = flat.get(label)
            if shown is not None and (isinstance(shown, str | dict) or shown != value):
                entry["kind"] = "choice"
            if shown is not None:
                entry["options"][int(value) if value.is_integer() else value] = _short(shown)
    return params


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return f"{value:g}" if isinstance(value, float) else str(value)


def spearman(x: list[float], y: list[float]) -> tuple[float | None, float | None]:
    """(rho, p-value); None when undefined (fewer than 3 pairs, or a constant column)."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    from scipy.stats import spearmanr

    rho, p = spearmanr(x, y)
    rho, p = float(rho), float(p)
    return (rho if math.isfinite(rho) else None), (p if math.isfinite(p) else None)


def correlations(docs: list[dict], params: dict[str, dict]) -> list[dict]:
    """One row per hyper-parameter: Spearman rho with validation accuracy (seed 004, Table 2)."""
    accuracy = {d.get("tid"): float(d["result"]["val_accuracy"]) for d in docs if is_ok(d)}
    rows = []
    for label, entry in params.items():
        pairs = [(v, accuracy[t]) for t, v in entry["values"].items() if t in accuracy]
        rho, p = spearman([a for a, _ in pairs], [b for _, b in pairs])
        encoding = "value" if entry["kind"] == "numeric" else "option index"
        rows.append({"parameter": label, "encoding": encoding, "n": len(pairs), "rho": rho, "p": p})
    return rows


# --- plots ---------------------------------------------------------------------------------


def plot_losses(docs: list[dict], path: Path, title: str) -> Path:
    """Loss per trial in posting order, failures marked, and the best loss so far."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ok = [(d["tid"], d["result"]["loss"]) for d in docs if is_ok(d)]
    if ok:
        ax.scatter(*zip(*ok, strict=True), s=18, label="trial loss (1 - val accuracy)")
        best, steps = math.inf, []
        for tid, loss in ok:
            best = min(best, loss)
            steps.append((tid, best))
        ax.step(*zip(*steps, strict=True), where="post", color="C3", label="best so far")
    failed = [d["tid"] for d in docs if d.get("state") in (2, 3) and not is_ok(d)]
    if failed:
        top = max((loss for _, loss in ok), default=1.0)
        ax.scatter(failed, [top] * len(failed), marker="x", color="k", label="failed / error")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="trial (tid)", ylabel="loss", title=title)
    ax.legend(loc="best")
    return _save(fig, path)


def plot_params(docs: list[dict], params: dict[str, dict], path: Path) -> Path:
    """One panel per hyper-parameter: its (encoded) value against validation accuracy."""
    plt = pyplot()
    accuracy = {d.get("tid"): d["result"]["val_accuracy"] for d in docs if is_ok(d)}
    n = max(1, len(params))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, (label, entry) in zip(axes.flat, params.items(), strict=False):
        pts = [(v, accuracy[t]) for t, v in entry["values"].items() if t in accuracy]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=18, alpha=0.8)
        if entry["kind"] == "choice" and entry["options"]:
            ticks = sorted(entry["options"])
            ax.set_xticks(ticks, [entry["options"][t] for t in ticks], rotation=30)
        elif _logscale([v for v, _ in pts]):
            ax.set_xscale("log")
        ax.set(xlabel=label, ylabel="val accuracy")
    for ax in list(axes.flat)[len(params) :]:
        ax.axis("off")
    return _save(fig, path)


def _logscale(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) >= 2 and max(positive) / min(positive) > 100


def epoch_curve(store: Store, doc: dict) -> list[tuple[int, float]]:
    """Validation accuracy per epoch: the ``metrics`` rows of the run that finished the trial
    (a requeued trial has rows from earlier owners too), else ``result.history``."""
    rows = store.find_metrics({"exp_key": doc.get("exp_key"), "tid": doc.get("tid")})
    owned = [r for r in rows if r.get("owner") == doc.get("owner")] or rows
    curve = {int(r["epoch"]): r["val_accuracy"] for r in owned if r.get("val_accuracy") is not None}
    if not curve:
        history = (doc.get("result") or {}).get("history") or {}
        curve = {i + 1: v for i, v in enumerate(history.get("val_accuracy") or []) if v is not None}
    return sorted(curve.items())


def plot_curves(store: Store, docs: list[dict], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    best = sorted((d for d in docs if is_ok(d)), key=lambda d: d["result"]["loss"])[:TOP_CURVES]
    for doc in best:
        curve = epoch_curve(store, doc)
        if curve:
            ax.plot(*zip(*curve, strict=True), marker="o", label=f"trial {doc['tid']}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title=f"top {len(best)} trials")
    if best:
        ax.legend(loc="best")
    return _save(fig, path)


def plot_f1(prov: dict, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(prov["f1"])
    ax.bar(names, [prov["f1"][n] or 0.0 for n in names], color="C2")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelrotation=45)
    acc = prov.get("test_accuracy")
    title = "final model" + ("" if acc is None else f", test accuracy {acc:.3f}")
    ax.set(ylabel="f1 on the test set", title=title)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


# --- markdown ------------------------------------------------------------------------------


def md_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def final_section(prov: dict) -> list[str]:
    rows = [{"class": name, **values} for name, values in prov["per_class"].items()]
    tf_version = (prov.get("versions") or {}).get("tensorflow")
    return [
        "## Final model (test set)",
        "",
        f"Trial {prov.get('tid')} retrained for {prov.get('epochs')} epoch(s) on "
        f"{prov.get('trained_on')} ({prov.get('n_train')} images), no early stopping; tested on "
        f"{prov.get('n_test')} untouched test images. Test accuracy **{prov['test_accuracy']:.3f}**"
        f", macro f1 {prov.get('macro_f1', 0):.3f}. Created {prov.get('created')} "
        f"(TensorFlow {tf_version}, GPU {prov.get('gpu') or 'none'}).",
        "",
        md_table(rows, ["class", "precision", "recall", "f1", "support"]),
        "",
        "![per-class f1](f1_per_class.png)",
        "",
    ]


def correlation_section(rows: list[dict]) -> list[str]:
    labels = [r["parameter"] for r in rows]
    table2 = [{"": "accuracy", **{r["parameter"]: r["rho"] for r in rows}}]
    return [
        "## Spearman correlation with validation accuracy",
        "",
        "Numeric parameters by value, choices by option index (see docs/results.md).",
        "",
        md_table(rows, ["parameter", "encoding", "n", "rho", "p"]),
        "",
        "As in Sánchez Acosta & Keith's Table 2:",
        "",
        md_table(table2, ["", *labels]),
        "",
    ]


def markdown(ctx: dict) -> str:
    counts = ctx["counts"]
    flat_top = [
        {**{k: v for k, v in r.items() if k != "params"}, **r["params"]} for r in ctx["top"]
    ]
    columns = list(dict.fromkeys(k for r in flat_top for k in r))
    lines = [
        f"# Study `{ctx['exp_key']}` ({ctx.get('model') or '?'})",
        "",
        f"Generated {ctx['created']} from {ctx['target']}.",
        "",
        "Trials: " + ", ".join(f"{counts[k]} {k}" for k in counts),
        "",
        f"Data: `{ctx.get('data')}`; budget: `{ctx.get('budget')}`.",
        "",
        f"## Best {len(ctx['top'])} trials",
        "",
        md_table(flat_top, columns) if flat_top else "(no finished trials)",
        "",
        *correlation_section(ctx["correlations"]),
        "## Figures",
        "",
        "![loss per trial](losses.png)",
        "",
        "![parameters vs accuracy](params.png)",
        "",
        "![epoch curves](curves.png)",
        "",
    ]
    if ctx.get("provenance"):
        lines += final_section(ctx["provenance"])
    return "\n".join(lines)


# --- the command ---------------------------------------------------------------------------


def write_csv(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["parameter", "encoding", "n", "rho", "p"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def build_report(store: Store, exp_key: str, out: Path, top: int = 10) -> dict[str, Path]:
    """Write every figure, ``correlations.csv`` and ``report.md`` into ``out``."""
    docs = [{**d, "exp_key": exp_key} for d in load_trials(store, exp_key)]
    out.mkdir(parents=True, exist_ok=True)
    params = encode(docs)
    rows = correlations(docs, params)
    files = {
        "losses": plot_losses(docs, out / "losses.png", f"{exp_key}: loss per trial"),
        "params": plot_params(docs, params, out / "params.png"),
        "curves": plot_curves(store, docs, out / "curves.png"),
        "correlations": write_csv(rows, out / "correlations.csv"),
    }
    prov = stored.latest_provenance(store.db, exp_key)
    if prov and prov.get("f1"):
        files["f1"] = plot_f1(prov, out / "f1_per_class.png")
    spec = next((d.get("spec") for d in docs if d.get("spec")), {}) or {}
    ctx = {
        "exp_key": exp_key,
        "model": spec.get("model"),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "target": store.target.redacted,
        "counts": study_counts(store, exp_key),
        "data": spec.get("data"),
        "budget": spec.get("budget"),
        "top": top_trials(store, exp_key, top),
        "correlations": rows,
        "provenance": prov if prov and prov.get("per_class") else None,
    }
    files["report"] = out / "report.md"
    files["report"].write_text(markdown(ctx))
    return files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m coordinator.report",
        description="Plots, Spearman correlations and a Markdown summary of one study.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--exp-key", required=True, help="the study to report on")
    p.add_argument("--out", type=Path, help="output folder (default $STRIX_HOME/reports/<key>)")
    p.add_argument("--top", type=int, default=10, help="trials in the best-trials table")
    add_store_args(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.exp_key)
    out = args.out or defaults.strix_home() / "reports" / safe
    try:
        if args.top < 1:
            raise ConfigError(f"--top must be >= 1, got {args.top}")
        store = open_store(args)
        try:
            files = build_report(store, args.exp_key, out, args.top)
        finally:
            store.close()
    except StrixError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for name, path in files.items():
        print(f"{name:13s} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
