"""One coordinator per study at a time: a lease in the store, judged by the server's clock."""

from __future__ import annotations

import time

import pytest

from coordinator.study.study import Study
from coordinator.study.study import run as run_study
from shared.errors import StudyBusy
from shared.store import Store
from shared.training.jobs import toy_objective, toy_space


def test_the_study_lease_is_taken_renewed_refused_and_expires(store: Store) -> None:
    assert store.claim_study("s", "A", 30) is None
    assert store.claim_study("s", "B", 30) == "A"
    assert store.claim_study("s", "A", 30) is None  # A renews its own
    store.release_study("s", "A")
    assert store.claim_study("s", "B", 30) is None
    assert store.claim_study("t", "A", 0.05) is None
    assert store.claim_study("t", "B", 30) == "A"
    time.sleep(0.2)  # A's own grace ran out (by the server's clock): B may take over
    assert store.claim_study("t", "B", 30) is None


def test_a_second_coordinator_is_refused_with_a_line_naming_the_holder(store: Store) -> None:
    holder = "elsewhere:4242:0f0e"
    assert store.claim_study("busy", holder, 60) is None
    study = Study(store, "busy", toy_objective, toy_space(0.0), 2, algo="rand", seed=0)
    with pytest.raises(
        StudyBusy, match=f"study 'busy' is being run by another coordinator, {holder}"
    ):
        run_study(study, grace=30, max_attempts=3, progress=False)
    assert store.trials_in("busy") == []  # it posted nothing
