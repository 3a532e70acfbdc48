"""``strix report`` (``python -m coordinator.report``): plots, a rank-correlation table
and ``report.md`` for one study.

The report answers the questions the seeds ask of a study: did the search converge
(loss per trial with the best so far), which hyper-parameters matter (each one against
validation accuracy, and their Spearman correlation with it:
:mod:`coordinator.analysis.correlations`),
how the best trials learned (validation accuracy per epoch), and, once ``strix final``
has run, how the final model does per class on the test set. Every figure is titled with
the study's name. A study without a successful trial is one error line, not empty plots.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import logging
from pathlib import Path
from typing import Any

from coordinator.analysis.correlations import correlations, encode, is_ok
from coordinator.analysis.finished import check_out_dir, check_store_flags, no_success, safe_name
from coordinator.study.stores import open_store
from coordinator.study.summary import trial_seconds
from shared.config import cli, settings
from shared.errors import ConfigError
from shared.store import Store
from shared.store import exports as stored

log = logging.getLogger("coordinator.report")

PROG = "strix report"
TRIAL_FIELDS = ["tid", "state", "result", "spec", "misc", "owner", "worker", "started", "ended"]
EXAMPLES = """
  strix report --exp-key convstrix-128px --out reports/convstrix
  python -m coordinator.report --exp-key vggstrix-128px --out /tmp/vgg \\
      --mongo mongodb://strix:***@db:27017/?authSource=admin
"""


# --- data ----------------------------------------------------------------------------------


def load_trials(store: Store, exp_key: str) -> list[dict]:
    """Every trial of the study, by tid; an error line when none has succeeded."""
    docs = [{**d, "exp_key": exp_key} for d in store.trials_in(exp_key, fields=TRIAL_FIELDS)]
    if not any(is_ok(d) for d in docs):
        raise no_success(store, exp_key)
    return docs


def epoch_curve(store: Store, doc: dict) -> list[tuple[int, float]]:
    """Validation accuracy per epoch: the ``metrics`` rows of the run that finished the trial
    (a requeued trial has rows from earlier owners too), else ``result.history``."""
    rows = store.history(doc["exp_key"], doc["tid"])
    owned = [r for r in rows if r.get("owner") == doc.get("owner")] or rows
    curve = {int(r["epoch"]): r["val_accuracy"] for r in owned if r.get("val_accuracy") is not None}
    if not curve:
        history = (doc.get("result") or {}).get("history") or {}
        curve = {i + 1: v for i, v in enumerate(history.get("val_accuracy") or []) if v is not None}
    return sorted(curve.items())


def best_of(docs: list[dict], n: int) -> list[dict]:
    return sorted((d for d in docs if is_ok(d)), key=lambda d: d["result"]["loss"])[:n]


def top_rows(docs: list[dict], n: int) -> list[dict]:
    """The best-trials table: result columns, then the trial's params by label."""
    from coordinator.analysis.correlations import shown_params

    rows = []
    for doc in best_of(docs, n):
        result, worker = doc["result"], doc.get("worker") or {}
        row = {"tid": doc["tid"], "loss": result.get("loss")}
        row.update({k: result.get(k) for k in ("val_accuracy", "best_epoch", "epochs")})
        row["pruned_at"] = result.get("pruned_at_epoch")  # None: not pruned, shown as "-"
        row.update(seconds=trial_seconds(doc), host=worker.get("host"))
        params = shown_params(doc)
        rows.append({**row, **{k: v for k, v in params.items() if not isinstance(v, dict)}})
    return rows


# --- markdown ------------------------------------------------------------------------------


def md_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def final_section(prov: dict, note: str | None) -> list[str]:
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
        *(["", f"**Note:** {note}."] if note else []),
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


FIGURES = {
    "losses": "loss per trial",
    "params": "parameters vs accuracy",
    "curves": "epoch curves",
}


def data_line(ctx: dict) -> str:
    source = ctx.get("source") or {}
    where = f" from {source['dir']}" if source.get("dir") else ""
    digest = f" (sha256 {source['hash'][:12]}...)" if source.get("hash") else ""
    line = f"Data: `{ctx.get('data')}`{where}{digest}; budget: `{ctx.get('budget')}`."
    return line + (f"\n\n**Note:** {ctx['data_note']}." if ctx.get("data_note") else "")


def markdown(ctx: dict) -> str:
    columns = list(dict.fromkeys(k for r in ctx["top"] for k in r))
    figures = [f"![{FIGURES[k]}]({k}.png)\n" for k in FIGURES if k in ctx["figures"]]
    lines = [
        f"# Study `{ctx['exp_key']}` ({ctx.get('model') or '?'})",
        "",
        f"Generated {ctx['created']} from {ctx['target']}.",
        "",
        "Trials: " + ", ".join(f"{n} {k}" for k, n in ctx["counts"].items()),
        "",
        data_line(ctx),
        "",
        f"## Best {len(ctx['top'])} trials",
        "",
        md_table(ctx["top"], columns),
        "",
        *correlation_section(ctx["correlations"]),
        "## Figures",
        "",
        *figures,
    ]
    if ctx.get("provenance"):
        lines += final_section(ctx["provenance"], ctx.get("final_note"))
    return "\n".join(lines)


# --- the command ---------------------------------------------------------------------------


def write_csv(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["parameter", "encoding", "n", "rho", "p"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def figures(store: Store, docs: list[dict], params: dict, exp_key: str, out: Path) -> dict:
    """Every figure that has something to show, written into ``out``."""
    from coordinator.analysis import plots

    files = {"losses": plots.save(plots.losses(docs, exp_key), out / "losses.png")}
    if params:
        files["params"] = plots.save(plots.params(docs, params, exp_key), out / "params.png")
    curves = [(d["tid"], epoch_curve(store, d)) for d in best_of(docs, plots.TOP_CURVES)]
    curves = [(tid, curve) for tid, curve in curves if curve]
    if curves:
        files["curves"] = plots.save(plots.curves(curves, exp_key), out / "curves.png")
    return files


def source_notes(store: Store, exp_key: str, prov: dict | None) -> dict:
    """The study's recorded data source, and a note wherever data no longer matches it."""
    from coordinator.analysis.finished import changed_source, current_hash
    from coordinator.study.datasource import recorded_source

    recorded = recorded_source(store, exp_key)
    now = current_hash(recorded)
    final_hash = ((prov or {}).get("data") or {}).get("source_hash")
    return {
        "source": recorded,
        "data_note": changed_source(recorded, now, "its directory now"),
        "final_note": changed_source(recorded, final_hash, "the final model's data"),
    }


def build_report(store: Store, exp_key: str, out: Path, top: int = 10) -> dict[str, Path]:
    """Write every figure, ``correlations.csv`` and ``report.md`` into ``out``."""
    docs = load_trials(store, exp_key)
    out.mkdir(parents=True, exist_ok=True)
    params = encode(docs)
    rows = correlations(docs, params)
    files = figures(store, docs, params, exp_key, out)
    files["correlations"] = write_csv(rows, out / "correlations.csv")
    prov = stored.latest_provenance(store.db, exp_key)
    prov = prov if prov and prov.get("per_class") and prov.get("f1") else None
    if prov:
        from coordinator.analysis import plots

        files["f1"] = plots.save(plots.f1_per_class(prov, exp_key), out / "f1_per_class.png")
    spec = next((d.get("spec") for d in docs if d.get("spec")), {}) or {}
    counts = store.tally(exp_key)
    counts.update(total=sum(counts.values()), requeued=store.count(exp_key, requeued=True))
    counts["pruned"] = store.count_pruned(exp_key)  # ok trials a pruner stopped early
    ctx = {
        "exp_key": exp_key,
        "model": spec.get("model"),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "target": store.target.redacted,
        "counts": counts,
        "data": spec.get("data"),
        "budget": spec.get("budget"),
        "top": top_rows(docs, top),
        "correlations": rows,
        "figures": files,
        "provenance": prov,
        **source_notes(store, exp_key, prov),
    }
    for note in ("data_note", "final_note"):
        if ctx[note]:
            log.warning("study %s: %s", exp_key, ctx[note])
    files["report"] = out / "report.md"
    files["report"].write_text(markdown(ctx))
    return files


def build_parser() -> argparse.ArgumentParser:
    description = "Plots, Spearman correlations and a Markdown summary of one study."
    p = cli.new_parser(PROG, description, EXAMPLES, store=True)
    p.add_argument("--exp-key", required=True, help="the study to report on")
    p.add_argument("--out", type=Path, help="output folder (default: <home>/reports/<exp-key>)")
    p.add_argument("--top", type=int, default=10, help="trials in the best-trials table")
    settings.add(p, "home")
    return p


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    home = Path(settings.resolve(args, ["home"])["home"]).expanduser()
    out = check_out_dir(args.out or home / "reports" / safe_name(args.exp_key))
    check_store_flags(args)
    store = open_store(args)
    try:
        files = build_report(store, args.exp_key, out, args.top)
    finally:
        store.close()
    for name, path in files.items():
        print(f"{name:13s} {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(PROG, build_parser, run, argv, level=logging.WARNING)


if __name__ == "__main__":
    raise SystemExit(main())
