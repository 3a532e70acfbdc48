"""The pruning decision, worked by hand: a table of cases for the median rule and ASHA,
the rungs, the stored pruner of a resumed study, the study budgets, and a real Keras trial
stopped by a judge (its result is ok, scored by the best accuracy it reached).

Everything here is in-process and needs no MongoDB; the multi-worker studies are in
``tests/coordinator/test_pruning_study.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from coordinator.study.definition import study_pruner
from coordinator.study.limits import Stopper, StudyLimits, without_progress
from shared.errors import ConfigError, JobError
from shared.training.jobs import keras_space, parse_config
from shared.training.pruning import Decision, PrunerConfig, decide, percentile

MEDIAN = PrunerConfig("median", min_epochs=2, startup=3, max_epochs=10)
ASHA = PrunerConfig("asha", min_epochs=1, reduction_factor=3, max_epochs=20)
ASHA2 = PrunerConfig("asha", min_epochs=2, reduction_factor=2, max_epochs=20)
NONE = PrunerConfig("none", max_epochs=20)

# (case, rule, epoch, value, others, threshold or None, prune or None = no decision)
CASES = [
    ("no pruner never judges", NONE, 3, 0.1, [0.9, 0.9], None, None),
    ("median: warm-up epoch", MEDIAN, 1, 0.1, [0.9, 0.9, 0.9], None, None),
    ("median: at R nothing is left to save", MEDIAN, 10, 0.1, [0.9, 0.9, 0.9], None, None),
    ("median: too few others", MEDIAN, 2, 0.1, [0.9, 0.9], None, False),
    ("median: below the median of 3", MEDIAN, 2, 0.5, [0.4, 0.6, 0.9], 0.6, True),
    ("median: equal to it continues", MEDIAN, 2, 0.6, [0.4, 0.6, 0.9], 0.6, False),
    ("median: even count, middle two", MEDIAN, 4, 0.6, [0.2, 0.5, 0.8, 0.9], 0.65, True),
    ("median: above continues", MEDIAN, 9, 0.7, [0.2, 0.5, 0.8, 0.9], 0.65, False),
    ("median: NaN among others is ignored", MEDIAN, 2, 0.5, [math.nan, 0.4, 0.6, 0.9], 0.6, True),
    ("asha: between rungs", ASHA, 2, 0.1, [0.9], None, None),
    ("asha: rung 9 < R", ASHA, 9, 0.1, [0.9], 0.9, True),
    ("asha: 27 > R is no rung", ASHA, 27, 0.1, [0.9], None, None),
    ("asha: first at a rung continues", ASHA, 1, 0.1, [], None, False),
    ("asha: one earlier, worse than it", ASHA, 1, 0.5, [0.6], 0.6, True),
    ("asha: one earlier, better than it", ASHA, 1, 0.7, [0.6], 0.6, False),
    # 2/3 quantile of [0.2, 0.5, 0.8]: pos (3-1)*2/3 = 1.333 -> 0.5 + 0.333*0.3 = 0.6
    ("asha: below the top third", ASHA, 3, 0.59, [0.8, 0.2, 0.5], 0.6, True),
    ("asha: in the top third", ASHA, 3, 0.61, [0.8, 0.2, 0.5], 0.6, False),
    # eta 2, rungs 2, 4, 8, 16: median of [0.1, 0.3, 0.5, 0.7] = 0.4
    ("asha eta 2: top half", ASHA2, 4, 0.45, [0.1, 0.3, 0.5, 0.7], 0.4, False),
    ("asha eta 2: bottom half", ASHA2, 16, 0.35, [0.1, 0.3, 0.5, 0.7], 0.4, True),
    ("asha eta 2: not a rung", ASHA2, 6, 0.0, [0.1, 0.3, 0.5, 0.7], None, None),
    ("asha: a NaN value of its own is pruned", ASHA, 1, math.nan, [0.5], 0.5, True),
]


@pytest.mark.parametrize(
    ("case", "cfg", "epoch", "value", "others", "threshold", "prune"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_decide(
    case: str,
    cfg: PrunerConfig,
    epoch: int,
    value: float,
    others: list[float],
    threshold: float | None,
    prune: bool | None,
) -> None:
    decision = decide(cfg, epoch, value, others)
    if prune is None:
        assert decision is None
        return
    assert isinstance(decision, Decision)
    assert decision.prune is prune
    assert decision.epoch == epoch and decision.rule == cfg.kind
    if threshold is None:
        assert decision.threshold is None
    else:
        assert decision.threshold == pytest.approx(threshold)
    assert list(decision.compared) == [v for v in others if not math.isnan(v)]
    assert json.loads(json.dumps(decision.to_dict(), allow_nan=True))["prune"] is prune
    assert str(epoch) in decision.reason()


def test_percentile_interpolates_as_numpy() -> None:
    np = pytest.importorskip("numpy")
    values = [0.31, 0.9, 0.12, 0.55, 0.7]
    for q in (0, 12.5, 50, 200 / 3, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


@pytest.mark.parametrize(
    ("cfg", "rungs"),
    [
        (PrunerConfig("asha", 1, 3, max_epochs=20), (1, 3, 9)),
        (PrunerConfig("asha", 1, 3, max_epochs=27), (1, 3, 9)),
        (PrunerConfig("asha", 1, 3, max_epochs=28), (1, 3, 9, 27)),
        (PrunerConfig("asha", 2, 2, max_epochs=20), (2, 4, 8, 16)),
        (PrunerConfig("asha", 5, 3, max_epochs=5), ()),
    ],
)
def test_rungs_lie_below_the_largest_resource(cfg: PrunerConfig, rungs: tuple) -> None:
    assert cfg.rungs() == rungs


def test_pruner_config_round_trips_and_refuses_nonsense() -> None:
    assert PrunerConfig.from_dict(ASHA.to_dict()) == ASHA
    assert PrunerConfig.from_dict(None).kind == "none"  # a study from before pruning
    for bad in ({"kind": "hyperband"}, {"min_epochs": 0}, {"reduction_factor": 1}):
        with pytest.raises(ConfigError):
            PrunerConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="unknown pruner"):
        PrunerConfig.from_dict({"kind": "asha", "eta": 3})


def test_a_job_carries_its_pruner_and_a_garbled_one_is_refused() -> None:
    space = keras_space("baseline", {}, {}, {}, pruner=ASHA.to_dict())
    assert parse_config(space).pruner == ASHA.to_dict()
    assert parse_config({**space, "pruner": None}).pruner is None
    with pytest.raises(JobError, match="bad pruner"):
        parse_config({**space, "pruner": {"kind": "asha", "min_epochs": -1}})


# --- the pruner of a resumed study ---------------------------------------------------


def test_a_new_study_takes_the_flags_over_the_defaults() -> None:
    got = study_pruner({"kind": "median", "startup": 2}, None, 12, "s")
    assert got == PrunerConfig("median", startup=2, max_epochs=12).to_dict()
    assert study_pruner({}, None, 12, "s")["kind"] == "asha"


def test_a_resumed_study_keeps_its_pruner_and_refuses_another() -> None:
    stored = PrunerConfig("median", min_epochs=3, max_epochs=20).to_dict()
    assert study_pruner({}, stored, 30, "s") == {**stored, "max_epochs": 30}
    assert study_pruner({"kind": "median", "min_epochs": 3}, stored, 20, "s") == stored
    with pytest.raises(ConfigError) as info:
        study_pruner({"kind": "asha"}, stored, 20, "s")
    message = str(info.value)
    assert "study s was launched with --pruner median --min-epochs 3" in message
    assert "drop --pruner" in message
    assert study_pruner({}, {}, 20, "old")["kind"] == "none"  # posted before pruning


# --- study budgets -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("losses", "since"),
    [
        ([], 0),
        ([0.5], 0),
        ([0.5, 0.6, 0.4], 0),
        ([0.5, 0.6, 0.5, None], 3),  # equal is no progress; a failed trial neither
        ([None, None, 0.9], 0),
        ([0.3, 0.2, 0.25, 0.2, 0.21], 3),
    ],
)
def test_trials_without_progress(losses: list[float | None], since: int) -> None:
    assert without_progress(losses) == since


def test_stopper_applies_stop_after_and_timeout() -> None:
    now = [0.0]
    reads = []

    def losses() -> list[float | None]:
        reads.append(1)
        return [0.5, 0.6, 0.7][: len(reads) + 1]

    stopper = Stopper(StudyLimits(stop_after=2), losses, clock=lambda: now[0])
    assert stopper.reason(2) is None  # [0.5, 0.6]: one without progress
    assert stopper.reason(2) is None and len(reads) == 1  # nothing finished: no read
    assert "--stop-after 2" in (stopper.reason(3) or "")
    timed = Stopper(StudyLimits(timeout_s=90.0), losses, clock=lambda: now[0])
    now[0] = 89.9
    assert timed.reason(0) is None
    now[0] = 90.0
    assert timed.reason(0) == "--timeout 1.5 min reached"


# --- a real trial stopped by its judge ---------------------------------------------


@pytest.mark.slow
def test_a_pruned_trial_is_an_ok_result_scored_by_its_best_accuracy(
    data_dir: Path, tmp_path: Path
) -> None:
    from shared.data.cache import load
    from shared.data.spec import DataSpec
    from shared.training.loop import Budget, run_trial

    spec = DataSpec(image_size=28, validation_fraction=0.2, limit=400, test_limit=100)
    data = load(spec, data_dir=data_dir, cache_dir=tmp_path)
    asked: list[tuple[int, float]] = []

    def judge(epoch: int, value: float) -> Decision | None:
        asked.append((epoch, value))
        return decide(PrunerConfig("asha", 2, max_epochs=5), epoch, value, [2.0])

    params = {"batch_size": 32, "learning_rate": 1e-3, "optimizer": "adam"}
    result = run_trial("baseline", params, data=data, budget=Budget(5, 5), judge=judge, seed=1)
    history = result["history"]["val_accuracy"]
    assert [e for e, _ in asked] == [1, 2] and result["epochs"] == 2
    assert [v for _, v in asked] == [history[0], max(history)]  # best so far, each epoch
    assert result["status"] == "ok" and result["pruned"] is True
    assert result["pruned_at_epoch"] == 2 and result["stopped_early"] is True
    assert result["loss"] == pytest.approx(1 - max(history))
    assert result["val_accuracy"] == max(history) == result["max_val_accuracy"]
    assert result["pruning"]["compared"] == [2.0] and result["pruning"]["threshold"] == 2.0
    json.dumps(result, allow_nan=False)
