"""docs/reproduction.md from the runs of ``bench/reproduce.py``: paper and Strix side by side.

Written after every run, from the ``result.json`` files alone, so it can be rebuilt at
any time (``--doc-only``). The hand-written analysis (the gap, the monitor decision, the
deviations) lives in ``bench/reproduce/notes.md`` and is included as it is.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

NOTES = Path(__file__).with_name("notes.md")
FIGURE = "images/reproduction-dropout.png"


def hardware() -> dict[str, Any]:
    """What the figures were measured on, the load of the others sharing it included."""
    model = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpu": model, "cores": os.cpu_count(), "load": [round(x, 2) for x in load]}


def _accuracy(result: dict) -> float:
    return 100.0 * float(result["test_accuracy"])


def _stats(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    mean, sd = statistics.mean(values), statistics.stdev(values)
    return f"{mean:.2f} ± {sd:.2f} (n={len(values)}, {min(values):.2f}–{max(values):.2f})"


Key = tuple[str, str, int | None, int]  # row, monitor, training images (None: all), epochs


def _grouped(runs: list, results: dict) -> dict[Key, list[tuple[Any, dict]]]:
    groups: dict[Key, list] = defaultdict(list)
    for run in runs:
        if run.folder in results:
            key = (run.row.key, run.monitor, run.budget.limit, run.budget.epochs)
            groups[key].append((run, results[run.folder]))
    return groups


def _where(result: dict, meta: dict) -> str:
    gpu = result.get("gpu")
    if gpu and "cpu" not in str(gpu).lower():
        return str(gpu)
    return f"CPU ×{meta['hardware']['cores']}"


def main_table(runs: list, results: dict, meta: dict) -> list[str]:
    """One line per row: the first monitor's runs, every seed of it."""
    first = runs[0].monitor if runs else "val_loss"
    groups = _grouped(runs, results)
    head = "| source | row | paper % | Strix % | Δ pp | params (Strix / paper) | s/epoch "
    head += "| epochs kept/ran | hardware | command |"
    lines = [head, "|" + " --- |" * 10]
    seen: set[str] = set()
    for run in runs:
        if run.row.key in seen:
            continue
        seen.add(run.row.key)
        done = groups.get((run.row.key, first, run.budget.limit, run.budget.epochs), [])
        lines.append(_row_line(run, done, meta))
    return lines


def _row_line(run: Any, done: list[tuple[Any, dict]], meta: dict) -> str:
    r = run.row
    paper = f"{r.paper:.2f}" if r.paper is not None else "figure"
    if not done:
        cells = [r.source, r.label, paper, "not run yet", "", r.paper_params, "", "", ""]
        return "| " + " | ".join(cells) + f" | `{run.command()}` |"
    accs = [_accuracy(res) for _, res in done]
    delta = f"{statistics.mean(accs) - r.paper:+.2f}" if r.paper is not None else ""
    res = done[0][1]
    count = res.get("params_count")
    params = f"{count:,}" if isinstance(count, int) else "?"
    per_epoch = res.get("seconds_per_epoch") or res.get("train_seconds", 0) / max(res["epochs"], 1)
    kept = f"{(res.get('trial') or {}).get('best_epoch', '–')}/{res.get('epochs')}"
    cells = [r.source, r.label, paper, _stats(accs), delta, f"{params} / {r.paper_params or '–'}"]
    cells += [f"{per_epoch:.0f}", kept, _where(res, meta), f"`{done[0][0].command()}`"]
    return "| " + " | ".join(cells) + " |"


def monitor_table(runs: list, results: dict) -> list[str]:
    """Rows measured under both monitors: test accuracy by what early stopping kept."""
    groups = _grouped(runs, results)
    keys = sorted({(k, n or 0, e) for k, _, n, e in groups})
    lines = ["| row | images | max epochs | val_loss (seed's rule) | val_accuracy | Δ pp "]
    lines[0] += "| kept epochs: val_loss / val_accuracy |"
    lines.append("|" + " --- |" * 7)
    for key, n, epochs in keys:
        a = groups.get((key, "val_loss", n or None, epochs), [])
        b = groups.get((key, "val_accuracy", n or None, epochs), [])
        if a and b:
            acc_a, acc_b = [_accuracy(r) for _, r in a], [_accuracy(r) for _, r in b]
            delta = statistics.mean(acc_b) - statistics.mean(acc_a)
            kept = f"{_kept(a)} / {_kept(b)}"
            cells = [key, str(n or "all"), str(epochs), _stats(acc_a), _stats(acc_b)]
            lines.append("| " + " | ".join([*cells, f"{delta:+.2f}", kept]) + " |")
    return lines if len(lines) > 2 else []


def seed_table(runs: list, results: dict, papers: dict[str, float | None]) -> list[str]:
    """Every row measured with more than one seed: the spread that a gap to the paper
    must be weighed against."""
    lines = ["| row | monitor | images | max epochs | Strix % over seeds | paper % | Δ pp (mean) "]
    lines[0] += "| kept/ran epochs |"
    lines.append("|" + " --- |" * 8)
    groups = _grouped(runs, results)
    for (key, monitor, n, epochs), done in sorted(groups.items(), key=lambda g: str(g[0])):
        if len(done) < 2:
            continue
        accs, paper = [_accuracy(r) for _, r in done], papers.get(key)
        delta = "–" if paper is None else f"{statistics.mean(accs) - paper:+.2f}"
        cells = [key, monitor, str(n or "all"), str(epochs), _stats(accs)]
        cells += ["–" if paper is None else f"{paper:.2f}", delta, _kept(done)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def _kept(done: list[tuple[Any, dict]]) -> str:
    return ",".join(
        f"{(r.get('trial') or {}).get('best_epoch')}/{r.get('epochs')}" for _, r in done
    )


def correlation_table(runs: list, results: dict) -> list[str]:
    """Seed 004 Table 2 from Strix's Table 1 runs, through coordinator.report's Spearman."""
    from coordinator.analysis.correlations import correlations, encode

    docs = []
    for i, run in enumerate(r for r in runs if r.row.source == "seed 004, Table 1"):
        if run.folder not in results or run.seed != 0:
            continue
        s = run.row.sets
        two = s["num_conv_layers"] == 2
        vals = {"conv_layers": s["num_conv_layers"], "filters_1": s["filters"]}
        vals |= {"filters_2": s["filters"] if two else 0, "hidden_units": s["hidden_units"]}
        result = {"status": "ok", "val_accuracy": results[run.folder]["test_accuracy"]}
        docs.append(
            {"tid": i, "result": result, "misc": {"vals": {k: [v] for k, v in vals.items()}}}
        )
    if len(docs) < 2:
        return []
    paper = {"conv_layers": -0.89, "filters_1": 0.24, "filters_2": -0.72, "hidden_units": 0.35}
    lines = [
        "| parameter | paper | Strix ρ (Spearman) | n | sign |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows = correlations(docs, encode(docs)) if len(docs) > 2 else _two_rows(docs)
    for row in rows:
        rho, ref = row["rho"], paper[row["parameter"]]
        same = "–" if rho is None else ("same" if (rho > 0) == (ref > 0) else "**opposite**")
        shown = "undefined" if rho is None else f"{rho:+.2f}"
        lines.append(f"| {row['parameter']} | {ref:+.2f} | {shown} | {row['n']} | {same} |")
    return lines


def _two_rows(docs: list[dict]) -> list[dict]:
    """Two rows give a direction, not a rank correlation: +1 when accuracy moved with the
    parameter, -1 against it (shown as such, and computed by Spearman from 3 rows on)."""
    a, b = docs
    gain = b["result"]["val_accuracy"] - a["result"]["val_accuracy"]
    rows = []
    for label, (va,) in a["misc"]["vals"].items():
        step = b["misc"]["vals"][label][0] - va
        rho = None if step == 0 or gain == 0 else (1.0 if (step > 0) == (gain > 0) else -1.0)
        rows.append({"parameter": label, "n": 2, "rho": rho})
    return rows


def dropout_figure(runs: list, results: dict, doc: Path) -> list[str]:
    """Seed 004 Figure 4: train and test accuracy against dropout, when those rows ran."""
    points = []
    for run in runs:
        if run.row.source == "seed 004, Figure 4" and run.folder in results and run.seed == 0:
            res = results[run.folder]
            kept = (res.get("trial") or {}).get("best_epoch", len(res["history"]["accuracy"]))
            train = 100 * res["history"]["accuracy"][kept - 1]
            points.append((run.row.sets["dropout_rate"], train, _accuracy(res)))
    if len(points) < 2:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points.sort()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label="train")
    ax.plot([p[0] for p in points], [p[2] for p in points], "s-", label="test")
    ax.set(xlabel="dropout probability", ylabel="accuracy %", title="seed 004 Fig. 4, Strix")
    ax.legend()
    path = doc.parent / FIGURE
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [f"![dropout sweep]({FIGURE})"]


def write_doc(doc: Path, runs: list, results: dict, meta: dict) -> None:
    hw, end = meta["hardware"], meta.get("hardware_end", meta["hardware"])
    budget = runs[0].budget if runs else None
    lines = ["# Reproducing the seed papers with Strix", ""]
    lines += [
        f"Written by `python -m bench.reproduce {' '.join(meta.get('argv') or [])}` "
        f"({meta['mode']} mode), started {meta['started']}, updated "
        f"{time.strftime('%Y-%m-%d %H:%M')}: {len(results)} of {len(runs)} runs done.",
        "",
        f"Hardware: {hw['cpu']}, {hw['cores']} cores, load average {hw['load']} at the start "
        f"and {end['load']} at the last update (other engineers' test runs share the cores).",
    ]
    if budget is not None:
        limit = f", on {budget.limit} train+val images" if budget.limit else ""
        lines.append(
            f"Budget per run: the flags of its command (the mode's default: at most "
            f"{budget.epochs} epochs, early-stopping patience {budget.patience}{limit}); "
            "test accuracy always on all 10,000 test images."
        )
    lines += ["", "## Paper and Strix", "", *main_table(runs, results, meta), ""]
    for title, part in (
        ("## Spread over seeds", seed_table(runs, results, {r.row.key: r.row.paper for r in runs})),
        ("## Early stopping: what `--monitor` keeps", monitor_table(runs, results)),
        ("## Seed 004, Table 2: correlations with accuracy", correlation_table(runs, results)),
        ("## Seed 004, Figure 4: dropout", dropout_figure(runs, results, doc)),
    ):
        if part:
            lines += [title, "", *part, ""]
    if NOTES.is_file():
        lines += [NOTES.read_text().strip(), ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines))
