"""A CI-sized case of the search simulator (bench/simulate.py): a few seeds, few workers,
seconds of CPU. It fails when an engine, the liar or the pruning path stops working.

Everything is seeded, so the figures are deterministic: the margins below were checked
with room to spare, not tuned to pass.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench import simulate
from bench.search import problems, sim
from bench.search.searchers import Strix


def _run(method: str, problem: problems.Problem, workers: int, budget: int, seed: int) -> dict:
    return simulate.one_run(method, problem, workers, budget, seed)


@pytest.mark.parametrize("algo", ["tpe", "anneal", "optuna-tpe", "rand"])
def test_every_engine_runs_a_study_and_asha_prunes(algo: str) -> None:
    problem = problems.get("h6curve", seed=0, max_epochs=9)
    r = _run(f"strix:{algo}/worst/asha", problem, 4, 90, seed=0)
    assert r["trials"] > 10 and r["complete"] >= 2, r
    assert r["pruned"] >= 5, "ASHA's decide() stopped pruning"
    assert r["epochs"] < 9 * r["trials"] * 0.7, "pruned trials must spend fewer epochs"
    assert np.isfinite(r["regret"][-1])
    none = _run(f"strix:{algo}/worst/none", problem, 4, 90, seed=0)
    assert none["pruned"] == 0 and none["complete"] >= 5, "no pruner: every trial runs on"
    assert none["epochs"] >= 9 * none["complete"]


def _configs(liar: str, workers: int) -> list[tuple[float, ...]]:
    problem = problems.get("h6")
    searcher = Strix(problem, "tpe", liar, "none", seed=1)
    sim.simulate(searcher, problem, workers, 60 / workers, seed=1)
    return [
        tuple(doc["misc"]["vals"][f"x{i}"][0] for i in range(6)) for doc in searcher.trials.trials
    ]


def test_the_liar_changes_what_parallel_tpe_suggests() -> None:
    assert _configs("none", 1) == _configs("worst", 1), "one worker: nothing runs beside"
    worst, none = _configs("worst", 8), _configs("none", 8)
    assert worst[:20] == none[:20], "the 20 random start-up trials do not depend on the liar"
    assert worst[20:] != none[20:], "with 8 workers the liar must change TPE's suggestions"


def test_model_based_engines_beat_random_search_on_hartmann6() -> None:
    problem = problems.get("h6")
    regret = {
        m: np.mean([_run(m, problem, 1, 60, seed)["regret"][-1] for seed in range(3)])
        for m in ("strix:rand/none/none", "strix:tpe/worst/none", "strix:optuna-tpe/worst/none")
    }
    assert regret["strix:tpe/worst/none"] < regret["strix:rand/none/none"], regret
    assert regret["strix:optuna-tpe/worst/none"] < regret["strix:rand/none/none"], regret


def test_the_peers_run_in_the_same_virtual_time() -> None:
    problem = problems.get("h6curve", seed=0, max_epochs=9)
    optuna = _run("optuna", problem, 4, 90, seed=0)
    assert optuna["pruned"] > 0 and optuna["complete"] > 0, "Hyperband must prune"
    pytest.importorskip("dehb")
    dehb = _run("dehb", problem, 4, 90, seed=0)
    assert dehb["trials"] > 10 and dehb["epochs"] <= 90 + 4 * 9


def test_a_run_is_deterministic_and_summarised() -> None:
    problem = problems.get("h6curve", seed=0, max_epochs=9)
    a = _run("strix:optuna-tpe/worst/asha", problem, 2, 40, seed=3)
    b = _run("strix:optuna-tpe/worst/asha", problem, 2, 40, seed=3)
    assert {k: v for k, v in a.items() if k != "cpu_s"} == {
        k: v for k, v in b.items() if k != "cpu_s"
    }
    text = simulate.summary([a, {**b, "seed": 4}])
    assert "| strix:optuna-tpe/worst/asha |" in text and "choose (h6curve)" in text
