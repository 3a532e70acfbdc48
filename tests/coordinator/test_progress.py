"""What a running study prints: a bar on a terminal, summary lines elsewhere."""

from __future__ import annotations

import io

import pytest

from coordinator.study import progress
from coordinator.study.progress import Progress, best_text, status_line

TALLY = {"queued": 2, "running": 1, "ok": 3, "failed": 2, "error": 1}


def test_status_line_keeps_every_outcome_apart() -> None:
    line = status_line("s", 6, 10, TALLY, "val_acc 0.9100")
    assert line == (
        "s: 6/10 trials, best val_acc 0.9100, ok 3, failed 2, error 1, running 1, queued 2"
    )


def test_best_is_shown_as_val_accuracy_when_the_trial_has_one() -> None:
    assert best_text({"result": {"loss": 0.09, "val_accuracy": 0.91}}) == "val_acc 0.9100"
    assert best_text({"result": {"loss": 0.25}}) == "loss 0.25"
    assert best_text(None) == "-"


def test_off_a_terminal_it_prints_lines_not_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    view = Progress("s", 10, enabled=True, stream=out)
    for _ in range(50):  # many polls within the interval: no line yet
        view.update(TALLY, "-")
    assert out.getvalue() == ""
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    view.update(TALLY, "-")
    view.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[-1].startswith("s: 6/10 trials")


def test_disabled_progress_prints_nothing() -> None:
    out = io.StringIO()
    view = Progress("s", 10, enabled=False, stream=out)
    view.update(TALLY, "-")
    view.close()
    assert out.getvalue() == ""
