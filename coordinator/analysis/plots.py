"""The figures of ``strix report`` and ``strix final``, each titled with its study.

Every function builds one matplotlib figure from plain trial documents and returns it;
:func:`save` writes and closes it. matplotlib is imported on first use, on the Agg
backend (files only, no display needed), so ``--help`` never loads it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from coordinator.analysis.correlations import is_ok

TOP_CURVES = 5
MAX_TICKS = 12  # an integer parameter with more distinct values gets integer ticks only


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def losses(docs: list[dict], exp_key: str) -> Any:
    """Loss per trial in posting order, failures marked, and the best loss so far."""
    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    ok = [(d["tid"], d["result"]["loss"]) for d in docs if is_ok(d)]
    ax.scatter(*zip(*ok, strict=True), s=18, label="trial loss (1 - val accuracy)")
    best, steps = math.inf, []
    for tid, loss in ok:
        best = min(best, loss)
        steps.append((tid, best))
    ax.step(*zip(*steps, strict=True), where="post", color="C3", label="best so far")
    failed = [d["tid"] for d in docs if _finished(d) and not is_ok(d)]
    if failed:
        top = max(loss for _, loss in ok)
        ax.scatter(failed, [top] * len(failed), marker="x", color="k", label="failed / error")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="trial (tid)", ylabel="loss", title=f"{exp_key}: loss per trial")
    ax.legend(loc="best")
    return fig


def _finished(doc: dict) -> bool:
    from shared.store import State

    return doc.get("state") in (State.DONE, State.ERROR)


def params(docs: list[dict], encoded: dict[str, dict], exp_key: str) -> Any:
    """One panel per hyper-parameter: its (encoded) value against validation accuracy."""
    accuracy = {d.get("tid"): d["result"]["val_accuracy"] for d in docs if is_ok(d)}
    cols = min(3, len(encoded))
    rows = math.ceil(len(encoded) / cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows + 0.4), squeeze=False)
    for ax, (label, entry) in zip(axes.flat, encoded.items(), strict=False):
        pts = [(v, accuracy[t]) for t, v in entry["values"].items() if t in accuracy]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=18, alpha=0.8)
        else:
            ax.text(0.5, 0.5, "not used by a finished trial", ha="center", transform=ax.transAxes)
        _x_axis(ax, entry, [v for v, _ in pts])
        ax.set(xlabel=label, ylabel="val accuracy")
    for ax in list(axes.flat)[len(encoded) :]:
        ax.axis("off")
    fig.suptitle(f"{exp_key}: hyper-parameters vs validation accuracy")
    return fig


def _x_axis(ax: Any, entry: dict, values: list[float]) -> None:
    """Choices by option name, integers on integer ticks, wide positive ranges in log."""
    if entry["kind"] == "choice" and entry["options"]:
        ticks = sorted(entry["options"])
        ax.set_xticks(ticks, [entry["options"][t] for t in ticks], rotation=30)
    elif entry.get("integer"):
        from matplotlib.ticker import MaxNLocator

        ticks = sorted(set(values))
        if 0 < len(ticks) <= MAX_TICKS and ticks[-1] - ticks[0] < 2 * MAX_TICKS:
            ticks = list(range(int(ticks[0]), int(ticks[-1]) + 1))
            ax.set_xticks(ticks, [str(t) for t in ticks])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    elif _logscale(values):
        ax.set_xscale("log")


def _logscale(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) >= 2 and max(positive) / min(positive) > 100


def curves(best: list[tuple[int, list[tuple[int, float]]]], exp_key: str) -> Any:
    """Validation accuracy per epoch of the best trials: ``[(tid, [(epoch, acc), ...])]``."""
    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    for tid, curve in best:
        ax.plot(*zip(*curve, strict=True), marker="o", label=f"trial {tid}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    title = f"{exp_key}: validation accuracy per epoch, top {len(best)} trials"
    ax.set(xlabel="epoch", ylabel="validation accuracy", title=title)
    ax.legend(loc="best")
    return fig


def f1_per_class(prov: dict, exp_key: str) -> Any:
    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    names = list(prov["f1"])
    ax.bar(names, [prov["f1"][n] or 0.0 for n in names], color="C2")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelrotation=45)
    acc = prov.get("test_accuracy")
    title = f"{exp_key}: final model" + ("" if acc is None else f", test accuracy {acc:.3f}")
    ax.set(ylabel="f1 on the test set", title=title)
    return fig


def confusion(matrix: Any, title: str) -> Any:
    """The test set's confusion matrix, counts written in the cells."""
    import numpy as np

    from shared.data.idx import CLASS_NAMES

    fig, ax = pyplot().subplots(figsize=(8, 7))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(len(CLASS_NAMES))
    ax.set_xticks(ticks, CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(ticks, CLASS_NAMES)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    limit = matrix.max() / 2 if matrix.size else 0
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > limit else "black")
    return fig
