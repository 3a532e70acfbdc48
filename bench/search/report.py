"""The simulator's figures: median regret with spread per method and worker count, at
fractions of the time budget, and which Strix engine and liar the figures choose.

Pure functions over the per-run records ``bench/simulate.py`` writes (one JSON object per
line), so a partial run can be summarised while it goes on.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

FRACTIONS = (0.25, 0.5, 1.0)


def _cell(values: list[float]) -> str:
    """median [25th-75th percentile]; '—' where most seeds have no full-budget trial yet."""
    arr = np.asarray(values, dtype=float)
    med = float(np.median(arr))
    if not math.isfinite(med):
        return "—"
    low, high = np.percentile(arr, [25, 75])
    high_text = f"{high:.3f}" if math.isfinite(high) else "∞"
    return f"{med:.3f} [{low:.3f}-{high_text}]"


def grouped(records: Iterable[dict]) -> dict[tuple[str, str, int], list[dict]]:
    """Runs by (problem, method, workers); a seed run twice (a resumed grid) counts once."""
    last = {(r["problem"], r["method"], r["workers"], r["seed"]): r for r in records}
    out: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for (problem, method, workers, _), r in sorted(last.items()):
        out[(problem, method, workers)].append(r)
    return out


def table(records: list[dict], problem: str) -> str:
    """A markdown table: one row per method, one column per worker count (regret at the
    end of the budget, median [IQR] over seeds), plus regret at half the budget."""
    groups = grouped(r for r in records if r["problem"] == problem)
    methods = sorted({m for _, m, _ in groups})
    workers = sorted({w for _, _, w in groups})
    head = [f"{w} worker{'s' * (w > 1)}" for w in workers]
    lines = [
        f"| method ({problem}) | " + " | ".join(head) + " | seeds |",
        "|---" * (len(workers) + 2) + "|",
    ]
    for m in methods:
        cells, seeds = [], set()
        for w in workers:
            runs = groups.get((problem, m, w), [])
            seeds.add(len(runs))
            cells.append(_cell([r["regret"][-1] for r in runs]) if runs else "")
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {'/'.join(map(str, sorted(seeds)))} |")
    return "\n".join(lines)


def curve_table(records: list[dict], problem: str, workers: int) -> str:
    """Median regret against simulated time (fractions of the budget) at one worker count."""
    groups = grouped(r for r in records if r["problem"] == problem and r["workers"] == workers)
    head = " | ".join(f"t={f:g}T" for f in FRACTIONS)
    lines = [f"| method ({problem}, {workers} workers) | {head} |", "|---" * 4 + "|"]
    for (_, m, _), runs in sorted(groups.items()):
        cells = [_cell([r["regret"][i] for r in runs]) for i in range(len(FRACTIONS))]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def choose(records: list[dict], problem: str) -> tuple[str, dict[str, float]]:
    """The Strix method (``strix:ALGO/LIAR/...``) with the lowest mean over worker counts
    of the median final regret, and every Strix method's score. Only worker counts every
    Strix method has runs at are compared (a partial grid must not favour a method that
    skipped the hard cases)."""
    groups = grouped(r for r in records if r["problem"] == problem)
    strix = {(m, w): runs for (_, m, w), runs in groups.items() if m.startswith("strix:")}
    methods = {m for m, _ in strix}
    shared = [w for w in {w for _, w in strix} if all((m, w) in strix for m in methods)]
    mean = {
        m: float(np.mean([np.median([r["regret"][-1] for r in strix[(m, w)]]) for w in shared]))
        for m in methods
    }
    return min(mean, key=mean.__getitem__), mean
