"""The suggestion engines behind hyperopt's ``algo`` contract, and the constant liar.

Unit tests of pure functions and of the engines on hyperopt's in-memory ``Trials``; the
engines on the real store and workers are in tests/worker/test_worker_protocol.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hyperopt import STATUS_OK, Trials, base, fmin, hp

from coordinator.search import liar as liars
from coordinator.search.engines import ALGOS, check, suggester
from coordinator.study.study import suggestion
from shared.errors import ConfigError
from shared.spaces import SPACES


def test_the_lie_is_a_pure_function_of_the_finished_losses() -> None:
    losses = [0.5, 0.1, 0.3, math.inf]
    assert liars.lie(losses, "worst") == 0.5
    assert liars.lie(losses, "best") == 0.1
    assert liars.lie(losses, "mean") == pytest.approx(0.3)
    assert liars.lie(losses, "none") is None
    assert liars.lie([], "worst") is None  # nothing to lie with: pending trials left out
    with pytest.raises(ValueError, match="unknown"):
        liars.lie(losses, "median")


def _doc(tid: int, state: int, loss: float | None = None, status: str = "ok") -> dict:
    result = {"status": "new"} if loss is None and status == "ok" else {"status": status}
    if loss is not None:
        result["loss"] = loss
    return {"tid": tid, "state": state, "result": result, "misc": {"tid": tid}}


def test_pending_trials_carry_the_lie_and_none_hides_them() -> None:
    trials = Trials()
    trials._dynamic_trials = [_doc(0, 2, 0.2), _doc(1, 2, 0.6), _doc(2, 1), _doc(3, 0)]
    trials._dynamic_trials.append(_doc(4, 2, None, status="fail"))
    trials.refresh()
    seen = liars.lied(trials, "worst")
    assert [d["result"].get("loss") for d in seen.trials] == [0.2, 0.6, 0.6, 0.6, None]
    assert [d["tid"] for d in liars.lied(trials, "none").trials] == [0, 1, 4]
    assert liars.lied(trials, "mean").trials[2]["result"]["loss"] == pytest.approx(0.4)
    assert trials.trials[2]["result"] == {"status": "new"}, "the real documents are untouched"
    assert seen.new_trial_ids(1) == [5], "everything else is the real trials object's"


SPACE = {
    "arch": hp.choice(
        "arch",
        [
            {"kind": "a", "x": hp.uniform("x", 0, 1)},
            {"kind": "b", "y": hp.choice("y", [16, 32]), "z": hp.quniform("z", 0.05, 0.5, 0.05)},
        ],
    ),
    "n": hp.quniform("n", 1, 4, 1),
    "lr": hp.loguniform("lr", np.log(1e-4), np.log(1e-1)),
}


def _loss(s: dict) -> dict:
    arch = s["arch"]
    x = arch.get("x", arch.get("z", 0.5))
    return {"status": STATUS_OK, "loss": (x - 0.3) ** 2 + (np.log10(s["lr"]) + 2) ** 2}


def _fmin(algo: str, liar: str, n: int, seed: int = 3) -> Trials:
    trials = Trials()
    fmin(_loss, SPACE, algo=suggestion(algo, liar, seed), max_evals=n, trials=trials,
         rstate=np.random.default_rng(seed), show_progressbar=False)  # fmt: skip
    return trials


@pytest.mark.parametrize("algo", ["optuna-tpe", "tpe", "anneal", "rand"])
def test_conditional_branches_fill_exactly_the_active_labels(algo: str) -> None:
    trials = _fmin(algo, "worst", 25)
    assert len(trials.trials) == 25 and all(r["status"] == "ok" for r in trials.results)
    for doc in trials.trials:
        vals, idxs = doc["misc"]["vals"], doc["misc"]["idxs"]
        arch = vals["arch"][0]
        assert arch in (0, 1) and isinstance(arch, int | np.integer)
        assert bool(vals["x"]) == (arch == 0) and bool(vals["y"]) == bool(vals["z"]) == (arch == 1)
        assert {k: bool(v) for k, v in idxs.items()} == {k: bool(v) for k, v in vals.items()}
        assert vals["n"][0] in (1.0, 2.0, 3.0, 4.0) and 1e-4 <= vals["lr"][0] <= 1e-1
        if vals["z"]:
            assert vals["z"][0] == pytest.approx(round(vals["z"][0] / 0.05) * 0.05)
    assert {d["misc"]["vals"]["arch"][0] for d in trials.trials} == {0, 1}


def test_optuna_tpe_is_seeded_and_resumable() -> None:
    a, b = _fmin("optuna-tpe", "worst", 15), _fmin("optuna-tpe", "worst", 15)
    assert [d["misc"]["vals"] for d in a.trials] == [d["misc"]["vals"] for d in b.trials]
    other = _fmin("optuna-tpe", "worst", 15, seed=4)
    assert [d["misc"]["vals"] for d in other.trials] != [d["misc"]["vals"] for d in a.trials]


def _pending(trials: Trials, how_many: int, domain: base.Domain, algo: str) -> None:
    """Post ``how_many`` suggestions that stay RUNNING, as with several busy workers."""
    for k in range(how_many):
        (doc,) = suggester(algo, "worst")([100 + k], domain, trials, 50 + k)
        doc["state"] = 1
        trials.insert_trial_docs([doc])
        trials.refresh()


@pytest.mark.parametrize("algo", ["optuna-tpe", "tpe", "anneal"])
def test_the_liar_changes_what_is_suggested_beside_running_trials(algo: str) -> None:
    trials = _fmin("tpe", "worst", 30)
    domain = base.Domain(_loss, SPACE)
    _pending(trials, 8, domain, algo)
    said = {}
    for liar in ("worst", "best", "none"):
        (doc,) = suggester(algo, liar)([200], domain, trials, 11)
        said[liar] = doc["misc"]["vals"]
    assert said["worst"] != said["none"] and said["best"] != said["worst"]


def test_the_strix_spaces_work_with_optuna() -> None:
    from shared.training.jobs import keras_space

    for model, make in SPACES.items():
        space = keras_space(model, make(image_size=32, augment=True), {}, {})
        domain = base.Domain(lambda _: {"status": "ok", "loss": 0.0}, space)
        trials = Trials()
        for tid in range(12):
            (doc,) = suggester("optuna-tpe", "worst")([tid], domain, trials, tid)
            doc["state"], doc["result"] = 2, {"status": "ok", "loss": 1.0 / (tid + 1)}
            trials.insert_trial_docs([doc])
            trials.refresh()
            domain.memo_from_config(dict(base.spec_from_misc(doc["misc"])))  # evaluable


def test_unbounded_parameters_and_unknown_names_are_one_clear_line() -> None:
    domain = base.Domain(_loss, {"w": hp.normal("w", 0, 1)})
    with pytest.raises(ConfigError, match=r"'w' .*no bounds.*--algo tpe") as e:
        suggester("optuna-tpe", "worst")([0], domain, Trials(), 1)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="--algo 'smac' is unknown; use one of tpe"):
        check("smac")
    with pytest.raises(ConfigError, match="--liar 'median' is unknown"):
        check("tpe", "median")
    assert set(ALGOS) == {"tpe", "rand", "anneal", "optuna-tpe", "optuna-gp"}


def _launch(*argv: str) -> Any:  # a LaunchConfig
    from coordinator import launch

    return launch.resolve(launch.build_parser().parse_args(["--model", "baseline", *argv]))


def test_launch_takes_the_engine_and_the_liar_by_flag_or_environment(monkeypatch) -> None:
    cfg = _launch()
    assert (cfg.algo, cfg.liar) == ("tpe", "worst")  # the defaults (docs/benchmarks.md §7)
    given = _launch("--algo", "optuna-tpe", "--liar", "none")
    assert (given.algo, given.liar) == ("optuna-tpe", "none")
    monkeypatch.setenv("STRIX_LIAR", "mean")
    assert _launch().liar == "mean"
    with pytest.raises(ConfigError, match="--liar must be one of worst, mean, best, none, got 'x'"):
        _launch("--liar", "x")
    with pytest.raises(ConfigError, match="--algo must be one of tpe, rand, anneal"):
        _launch("--algo", "smac")


def test_optuna_gp_without_pytorch_is_refused_in_one_line() -> None:
    try:
        import torch  # noqa: F401

        pytest.skip("PyTorch is installed: the GP sampler can run")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match=r"--algo optuna-gp needs PyTorch.*--algo optuna-tpe"):
        _launch("--algo", "optuna-gp")


def test_mongo_trials_hand_pending_trials_to_the_engine_and_the_liar_sets_them(store) -> None:
    """The finding behind --liar: Strix's MongoTrials.refresh gives hyperopt every queued and
    running job (loss None, which tpe.suggest reads as inf); the liar replaces that."""
    from hyperopt import rand

    trials = store.trials("liar", resource="light")
    domain = base.Domain(_loss, SPACE)
    for tid in trials.new_trial_ids(4):
        trials.insert_trial_docs(rand.suggest([tid], domain, trials, tid))
    for loss in (0.3, 0.7):
        job = store.reserve("w1", "liar", ["light"])
        assert store.finish(job, "w1", {"status": "ok", "loss": loss})
    assert store.reserve("w1", "liar", ["light"]) is not None  # one runs, one stays queued
    trials.refresh()
    states = sorted((d["state"], d["result"].get("loss")) for d in trials.trials)
    assert states == [(0, None), (1, None), (2, 0.3), (2, 0.7)]
    lied = liars.lied(trials, "worst")
    assert sorted(d["result"]["loss"] for d in lied.trials) == [0.3, 0.7, 0.7, 0.7]
    assert [d["state"] for d in liars.lied(trials, "none").trials] == [2, 2]
