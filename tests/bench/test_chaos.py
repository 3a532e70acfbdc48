"""The chaos benchmark at CI size, and its log analysis (pure functions) on crafted logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.faults import runs
from bench.faults.chaos import Plan, ok, run_chaos

SKEW = -600.0  # this log's clock runs 10 minutes behind


def _log(*lines: str) -> str:
    return "\n".join(f"2026-01-01 00:00:{s} INFO worker.runner: {m}" for s, m in lines)


def test_runs_are_read_on_the_real_clock_and_overlaps_found() -> None:
    a = _log(("01,000", "trial 3 of k started"), ("05,000", "trial 3 ended (ok after 4.0s)"),
             ("09,000", "trial 3 ok: loss=0.1"))  # fmt: skip
    b = _log(("02,000", "trial 3 of k started"), ("03,500", "trial 3 was requeued by the reaper; "
             "stopping it"), ("04,000", "trial 3 was taken over by x"))  # fmt: skip
    (ra,) = runs.runs_in_log(a, "a", SKEW, None, 0.0)
    (rb,) = runs.runs_in_log(b, "b", 0.0, None, 0.0)
    assert (ra.end - ra.start, ra.how) == (4.0, "ok")  # execution, not the slow finish
    assert (rb.end - rb.start, rb.how) == (1.5, "stopped")
    assert ra.start - rb.start == pytest.approx(600 - 1.0)  # a's clock is 10 minutes behind
    assert runs.concurrent([ra, rb]) == {}
    rb_same_clock = runs.runs_in_log(b, "b", SKEW, None, 0.0)
    assert list(runs.concurrent([ra, *rb_same_clock])) == [3]
    assert runs.thrown_away_s([ra, *rb_same_clock]) == 1.5


def test_a_killed_run_ends_at_the_kill() -> None:
    text = _log(("01,000", "trial 7 of k started"))
    (r,) = runs.runs_in_log(text, "p", 0.0, died_at=1e12, now=2e12)
    assert (r.end, r.how) == (1e12, "killed")


@pytest.mark.slow
def test_a_short_chaos_run_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    plan = Plan(minutes=1.0, p=0.4, tick_s=5, warning_s=8, restart_every_s=30, down_s=1,
                sleep_s=2)  # fmt: skip
    figures = run_chaos(plan, tmp_path)
    assert ok(figures), figures
    assert figures["completed"] > 0 and figures["kills"] + figures["sigterms"] > 0, figures
