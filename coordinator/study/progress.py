"""What a running study shows: a tqdm bar on a terminal, a summary line elsewhere.

In a log file, ``docker logs`` or CI a redrawn bar is noise (a 9-minute study once wrote
500 redraws into one line), so off a terminal the same facts are printed as one plain
line every 30 s and once at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from tqdm import tqdm

log = logging.getLogger(__name__)
LINE_EVERY_S = 30.0


def best_text(best: Mapping[str, Any] | None) -> str:
    """The best trial as a user reads it: val accuracy when the trial has one, else loss."""
    if not best:
        return "-"
    result = best.get("result") or {}
    if result.get("val_accuracy") is not None:
        return f"val_acc {result['val_accuracy']:.4f}"
    return f"loss {result.get('loss'):.4g}"


def status_line(
    exp_key: str,
    done: int,
    total: int,
    tally: Mapping[str, int],
    best: str,
    reasons: str = "",
    pruned: int = 0,
) -> str:
    """One line with every outcome apart: ``ok``, ``failed`` and ``error`` are never summed;
    pruned trials are ok ones, shown among them."""
    counts = {k: f"{k} {tally[k]}" for k in ("ok", "failed", "error", "running", "queued")}
    if pruned:
        counts["ok"] += f" ({pruned} pruned)"
    parts = [f"{exp_key}: {done}/{total} trials", f"best {best}", *counts.values()]
    return ", ".join(parts) + (f" (failed: {reasons})" if reasons else "")


class Progress:
    """Shows the study's state; a bar on a terminal, periodic lines otherwise."""

    def __init__(self, exp_key: str, total: int, enabled: bool, stream: TextIO | None = None):
        self.exp_key, self.total, self.enabled = exp_key, total, enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and self.stream.isatty()
        self.bar = (
            tqdm(total=total, desc=exp_key, unit="trial", file=self.stream) if self.tty else None
        )
        self._last_line = time.monotonic()
        self._line = ""

    def update(
        self, tally: Mapping[str, int], best: str, reasons: str = "", pruned: int = 0
    ) -> None:
        done = min(tally["ok"] + tally["failed"] + tally["error"], self.total)
        self._line = status_line(self.exp_key, done, self.total, tally, best, reasons, pruned)
        if self.bar is not None:
            self.bar.n = done
            failed = tally["failed"] + tally["error"]
            post = {"best": best} | ({"pruned": pruned} if pruned else {})
            post |= {"failed": f"{failed} ({reasons[:40]})" if reasons else failed}
            post |= {"running": tally["running"], "queued": tally["queued"]}
            self.bar.set_postfix(post, refresh=False)
            self.bar.refresh()
        elif self.enabled and time.monotonic() - self._last_line >= LINE_EVERY_S:
            self._print()

    def _print(self) -> None:
        self._last_line = time.monotonic()
        print(self._line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self._line:
            self._print()
