"""A read-only Optuna storage over Strix's store, so optuna-dashboard can show live studies.

optuna-dashboard reads any :class:`optuna.storages.BaseStorage`. This one answers its reads
from Strix's typed read API (``Store.studies``/``trials_in``/``history``/``attachment``)
and refuses every write, so the dashboard can never change a study:

* a study is an ``exp_key``. Its id is the tid of its first trial: trial ids come from one
  database-wide counter, so the id is unique, and stable across dashboard restarts and
  new studies (an open page keeps its URL). Its direction is *maximize validation
  accuracy* when the study runs Strix's Keras objective, else *minimize hyperopt's loss*
  (toy and foreign objectives); a study keeps its direction, and every trial of it is
  scored the same way.
* a trial is a job: trial id = tid, number = rank by tid in the study (tids only grow,
  so a trial keeps its number). Its params come from the study's pickled hyperopt space,
  its epochs from ``metrics``; how states, values and params map is
  :mod:`coordinator.optuna_bridge.mapping`.

Reads are cached for ``ttl_s`` seconds (the whole study is re-read at most once per TTL,
whatever the number of open pages), and a finished trial's epochs are read once: they
cannot change. ``calls`` counts the store reads, to measure the load a page adds. When
MongoDB goes away, the last snapshot is served (with a warning) until it is back.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from coordinator.optuna_bridge.mapping import (
    LOSS,
    Objective,
    Param,
    objective_of,
    outcome,
    space_params,
    steps,
    study_distributions,
    times,
    trial_params,
    user_attrs,
)
from shared.errors import MissingAttachment, StoreError, StrixError
from shared.store import State, Store

log = logging.getLogger(__name__)

DOMAIN = "FMinIter_Domain"
UNFINISHED = [State.NEW, State.RUNNING]
FINISHED = [State.DONE, State.ERROR]
METRIC_NAMES = "study:metric_names"


class ReadOnlyStorageError(StrixError):
    """A write through the dashboard's storage: Strix studies change only through Strix."""


@dataclass
class StudyInfo:
    """What never changes for a study once its Domain has been read."""

    study_id: int
    exp_key: str
    model: str | None
    objective: Objective = LOSS
    params: dict[str, Param] = field(default_factory=dict)
    settled: bool = False  # False: the Domain could not be read yet, try again later

    def frozen(self) -> FrozenStudy:
        attrs = {"model": self.model, "objective": self.objective.name}
        attrs = {k: v for k, v in attrs.items() if v is not None}
        return FrozenStudy(
            self.exp_key, self.objective.direction, attrs, self.system_attrs(), self.study_id
        )

    def system_attrs(self) -> dict[str, Any]:
        """Optuna's metric names: the dashboard labels its axes with them."""
        return {METRIC_NAMES: [self.objective.name]}


class StrixStorage(BaseStorage):
    """Strix's studies as a read-only, briefly cached Optuna storage (see the module doc)."""

    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float = 2.0,
        allow_modules: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.ttl_s, self.allow_modules = store, ttl_s, tuple(allow_modules)
        self.calls: Counter[str] = Counter()  # store reads by method
        self.docs_read, self.read_s = 0, 0.0  # documents returned, seconds spent reading
        self._clock = clock
        self._lock = threading.RLock()
        self._studies: dict[str, StudyInfo] = {}
        self._studies_at = -math.inf
        self._snapshots: dict[int, tuple[float, list[FrozenTrial]]] = {}
        self._finished: dict[int, dict[int, dict]] = {}  # study -> tid -> job, read once
        self._unfinished: dict[int, set[int]] = {}  # study -> tids queued/running last time
        self._epochs: dict[tuple[str, int], dict[int, float]] = {}
        self._trial_study: dict[int, int] = {}

    def _read(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Every store read goes through here, counted, so the load is measurable."""
        t0 = time.perf_counter()
        try:
            got = getattr(self.store, method)(*args, **kwargs)
        finally:
            self.calls[method] += 1
            self.read_s += time.perf_counter() - t0
        self.docs_read += len(got) if isinstance(got, list) else 1
        return got

    # --- studies --------------------------------------------------------------------------
    def _known(self) -> dict[str, StudyInfo]:
        """exp_key -> study, re-listed at most once per TTL."""
        with self._lock:
            if self._clock() - self._studies_at < self.ttl_s:
                return self._studies
            try:
                names = self._read("studies")
                found = {n: self._describe(n) for n in names}
            except StoreError as e:
                if not self._studies:
                    raise
                log.warning("store unavailable, showing the last study list: %s", e)
                return self._studies
            known = {n: info for n, info in found.items() if info is not None}
            self._studies, self._studies_at = known, self._clock()
            return known

    def _describe(self, exp_key: str) -> StudyInfo | None:
        """A study's id, model and space; None if its jobs are gone (a dropped study)."""
        info = self._studies.get(exp_key)
        if info is None:
            first = self._read("trials_in", exp_key, fields=["strix"], limit=1)
            if not first:
                return None
            tid, model = first[0]["tid"], (first[0].get("strix") or {}).get("model")
            taken = {s.study_id for s in self._studies.values()}
            info = StudyInfo(tid if tid not in taken else max(taken) + 1, exp_key, model)
        if not info.settled:
            self._read_domain(info)
        return info

    def _read_domain(self, info: StudyInfo) -> None:
        """The study's objective and space, from the pickled Domain (read once).

        No Domain (a study not posted by ``fmin``) or a refused one (an objective from a
        package this process does not allow) is final: params are then described by their
        values. Only an unreachable store leaves the study to be described again.
        """
        from shared.domain import load_domain

        try:
            domain = load_domain(self._read("attachment", DOMAIN, info.exp_key), self.allow_modules)
        except StrixError as e:
            info.settled = isinstance(e, MissingAttachment) or not isinstance(e, StoreError)
            log.info("study %s: no search space (%s); params from the values", info.exp_key, e)
            return
        info.objective, info.settled = objective_of(domain), True
        try:
            info.params = space_params(domain.expr)
        except Exception as e:  # a space this mapping does not understand: not fatal
            log.warning("study %s: cannot map its search space (%r)", info.exp_key, e)

    def _study(self, study_id: int) -> StudyInfo:
        for info in self._known().values():
            if info.study_id == study_id:
                return info
        raise KeyError(f"study_id={study_id} is not a Strix study in {self.store!r}")

    def get_all_studies(self) -> list[FrozenStudy]:
        return sorted((s.frozen() for s in self._known().values()), key=lambda s: s._study_id)

    def get_study_id_from_name(self, study_name: str) -> int:
        info = self._known().get(study_name)
        if info is None:
            raise KeyError(f"no Strix study named {study_name!r}")
        return info.study_id

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._study(study_id).exp_key

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return [self._study(study_id).objective.direction]

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._study(study_id).frozen().user_attrs

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._study(study_id).system_attrs()

    # --- trials ---------------------------------------------------------------------------
    def _trials(self, info: StudyInfo) -> list[FrozenTrial]:
        """The study's trials, re-read at most once per TTL."""
        with self._lock:
            at, trials = self._snapshots.get(info.study_id, (-math.inf, []))
            if self._clock() - at < self.ttl_s:
                return trials
            try:
                trials = self._convert(info, self._fetch(info))
            except StoreError as e:
                if at == -math.inf:
                    raise
                log.warning("store unavailable, showing the last trials of %s: %s", info.exp_key, e)
                return trials
            self._snapshots[info.study_id] = (self._clock(), trials)
            self._trial_study.update((t._trial_id, info.study_id) for t in trials)
            return trials

    def _fetch(self, info: StudyInfo) -> list[dict]:
        """The study's jobs: the queued and running ones every time, a finished one once.

        Read in this order, a trial is never missing: it is in the unfinished read, or it
        finished before the server-side count, which then disagrees with what is cached.
        Trials that left the unfinished set are read by tid; if the counts still disagree
        (a trial posted and finished between two refreshes), the finished ones are re-read.
        """
        key, sid = info.exp_key, info.study_id
        live = {d["tid"]: d for d in self._read("trials_in", key, states=UNFINISHED)}
        tally = self._read("tally", key)
        n_finished = tally["ok"] + tally["failed"] + tally["error"]
        done = self._finished.setdefault(sid, {})
        gone = sorted(self._unfinished.get(sid, set()) - set(live))
        if len(done) != n_finished and gone:
            done.update((d["tid"], d) for d in self._read("trials_in", key, FINISHED, tids=gone))
        if len(done) != n_finished:
            done.clear()
            done.update((d["tid"], d) for d in self._read("trials_in", key, FINISHED))
        self._unfinished[sid] = set(live)
        merged = {**live, **done}  # a trial that finished between the two reads: its result
        return [merged[tid] for tid in sorted(merged)]

    def _convert(self, info: StudyInfo, docs: list[dict]) -> list[FrozenTrial]:
        vals = [(d.get("misc") or {}).get("vals") or {} for d in docs]
        params, dists = study_distributions(info.params, vals)
        now = time.time()
        out = []
        for number, (doc, trial_vals) in enumerate(zip(docs, vals, strict=True)):
            state, value, reason = outcome(doc, info.objective)
            start, complete = times(doc, state, now)
            shown, used = trial_params(trial_vals, params, dists)
            out.append(
                FrozenTrial(
                    number=number,
                    state=state,
                    value=value,
                    datetime_start=start,
                    datetime_complete=complete,
                    params=shown,
                    distributions=used,
                    user_attrs=user_attrs(doc, state, reason),
                    system_attrs={},
                    intermediate_values=self._intermediate(info, doc, state),
                    trial_id=int(doc["tid"]),
                )
            )
        return out

    def _intermediate(self, info: StudyInfo, doc: dict, state: TrialState) -> dict[int, float]:
        """Epochs from ``metrics``: every refresh while running, once when finished."""
        if state == TrialState.WAITING:
            return {}
        key = (info.exp_key, int(doc["tid"]))
        if key in self._epochs:
            return self._epochs[key]
        rows = self._read("history", info.exp_key, key[1])
        values = steps(rows, doc.get("owner"), info.objective)
        if state.is_finished():
            self._epochs[key] = values
        return values

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        trials = self._trials(self._study(study_id))
        chosen = [t for t in trials if states is None or t.state in states]
        return copy.deepcopy(chosen) if deepcopy else chosen

    def get_trial(self, trial_id: int) -> FrozenTrial:
        study_id = self._trial_study.get(trial_id)
        if study_id is None:
            docs = self._read("trials_in", None, fields=["exp_key"], tids=[trial_id])
            info = self._known().get(docs[0].get("exp_key")) if docs else None
            if info is None:
                raise KeyError(f"trial_id={trial_id} is not a Strix trial")
            study_id = info.study_id
        for trial in self._trials(self._study(study_id)):
            if trial._trial_id == trial_id:
                return trial
        raise KeyError(f"trial_id={trial_id} is not a Strix trial")

    # --- writes: refused ------------------------------------------------------------------
    def _refuse(self, what: str) -> Any:
        raise ReadOnlyStorageError(
            f"the Strix dashboard is read-only: cannot {what}; studies change only through "
            "coordinator.launch and the workers"
        )

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        return self._refuse("create a study")

    def delete_study(self, study_id: int) -> None:
        self._refuse("delete a study")

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._refuse("set a study attribute")

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._refuse("set a study attribute (notes)")

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._refuse("create a trial")

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: Any
    ) -> None:
        self._refuse("set a trial parameter")

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        return self._refuse("finish a trial")

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._refuse("report an intermediate value")

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._refuse("set a trial attribute")

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._refuse("set a trial attribute")
