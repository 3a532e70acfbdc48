"""Who tunes in the simulator: Strix (its real code), and the peers with the same budget.

* :class:`Strix` suggests through ``coordinator.study.study.suggestion`` (the function the
  coordinator's poster hands hyperopt: the ``--algo`` engine, the ``--liar``, one seed per
  trial) on an in-memory hyperopt ``Trials`` in which running trials are RUNNING documents,
  as in MongoDB; it prunes with ``shared.training.pruning.decide`` fed the values other
  trials recorded at the rung, as ``worker.pruner`` does. A trial's reported loss is its
  best value so far, pruned or not (Strix's loss is 1 - the best val accuracy kept).
* :class:`OptunaNative`: Optuna 5 ``TPESampler(multivariate=True, constant_liar=True)``
  with ``HyperbandPruner``, asked and told in the same virtual time.
* :class:`Dehb`: DEHB (PyPI ``dehb``) by ask/tell: it picks each trial's fidelity.
* Random search with ASHA is ``Strix("rand", ...)`` with the ``asha`` pruner.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from typing import Any

from bench.search.problems import Problem

log = logging.getLogger(__name__)


def _unused(config: dict) -> dict:  # the Domain's fn: the simulator evaluates, not hyperopt
    return {"status": "ok", "loss": 0.0}


class Strix:
    def __init__(self, problem: Problem, algo: str, liar: str | None, pruner: str, seed: int):
        from hyperopt import Trials, base

        from coordinator.study.study import suggestion
        from shared.training.pruning import PrunerConfig

        self.problem, self.seed = problem, seed
        self.suggest = suggestion(algo, liar, seed)
        kind = pruner if problem.max_epochs > 1 else "none"
        self.pruner = PrunerConfig(kind=kind, max_epochs=problem.max_epochs)
        self.domain = base.Domain(_unused, problem.space())
        self.trials = Trials()
        self.docs: dict[int, dict] = {}
        self.rungs: dict[int, dict[int, float]] = {}  # epoch -> tid -> value (store.rungs)
        self.best: dict[int, float] = {}  # tid -> its best value so far

    def start(self, tid: int) -> tuple[tuple[float, ...], int]:
        (new_id,) = self.trials.new_trial_ids(1)
        self.trials.refresh()
        (doc,) = self.suggest([new_id], self.domain, self.trials, new_id)
        doc["state"] = 1  # reserved by a worker at once (the queue is not simulated)
        self.trials.insert_trial_docs([doc])
        self.trials.refresh()
        self.docs[tid] = self.trials.trials[-1]
        vals = doc["misc"]["vals"]
        return tuple(float(vals[f"x{i}"][0]) for i in range(self.problem.dims)), 10**9

    def epoch(self, tid: int, epoch: int, value: float) -> bool:
        from shared.training.pruning import decide

        self.best[tid] = min(value, self.best.get(tid, value))
        if not self.pruner.judges_at(epoch):
            return False
        best = -self.best[tid]  # higher is better, as val accuracy
        rung = self.rungs.setdefault(epoch, {})
        others = [v for t, v in rung.items() if t != tid]
        decision = decide(self.pruner, epoch, best, others)
        rung[tid] = best
        return bool(decision and decision.prune)

    def finish(self, tid: int, loss: float, pruned: bool, epochs: int) -> None:
        doc = self.docs.pop(tid)
        self.best.pop(tid, None)
        doc["state"] = 2
        doc["result"] = {"status": "ok", "loss": loss, **({"pruned": True} if pruned else {})}
        self.trials.refresh()


class OptunaNative:
    def __init__(self, problem: Problem, seed: int):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed)
        pruner: Any = optuna.pruners.NopPruner()
        if problem.max_epochs > 1:
            pruner = optuna.pruners.HyperbandPruner(1, problem.max_epochs, reduction_factor=3)
        self.study = optuna.create_study(sampler=sampler, pruner=pruner)
        self.problem, self.open = problem, {}

    def start(self, tid: int) -> tuple[tuple[float, ...], int]:
        trial = self.study.ask()
        self.open[tid] = trial
        x = tuple(trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(self.problem.dims))
        return x, 10**9

    def epoch(self, tid: int, epoch: int, value: float) -> bool:
        trial = self.open[tid]
        trial.report(value, epoch)
        return epoch < self.problem.max_epochs and trial.should_prune()

    def finish(self, tid: int, loss: float, pruned: bool, epochs: int) -> None:
        import optuna

        trial = self.open.pop(tid)
        state = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
        self.study.tell(trial, None if pruned else loss, state=state)


class Dehb:
    def __init__(self, problem: Problem, seed: int):
        import ConfigSpace as CS
        from dehb import DEHB

        try:
            from loguru import logger

            logger.remove()  # DEHB logs every ask/tell at INFO
        except ImportError:
            pass
        cs = CS.ConfigurationSpace(seed=seed)
        add = getattr(cs, "add", None) or cs.add_hyperparameters  # ConfigSpace 1.x, 0.6
        add([CS.UniformFloatHyperparameter(f"x{i}", 0.0, 1.0) for i in range(problem.dims)])
        self.out = tempfile.TemporaryDirectory(prefix="strix-dehb-")
        self.dehb = DEHB(
            cs=cs,
            dimensions=problem.dims,
            min_fidelity=1,
            max_fidelity=max(problem.max_epochs, 1),
            eta=3,
            n_workers=1,
            seed=seed,
            output_path=self.out.name,
            save_freq=None,
        )
        self.problem, self.jobs = problem, {}

    def start(self, tid: int) -> tuple[tuple[float, ...], int]:
        job = self.dehb.ask()
        self.jobs[tid] = job
        config = job["config"]
        x = tuple(float(config[f"x{i}"]) for i in range(self.problem.dims))
        return x, max(1, round(job["fidelity"]))

    def epoch(self, tid: int, epoch: int, value: float) -> bool:
        return False

    def finish(self, tid: int, loss: float, pruned: bool, epochs: int) -> None:
        self.dehb.tell(self.jobs.pop(tid), {"fitness": loss, "cost": float(epochs)})
