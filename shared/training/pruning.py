"""Whether a trial should stop early: the median rule and ASHA, as pure functions.

Nothing here reads or writes anything. A worker asks :func:`decide` at the end of each
epoch, with the values other trials recorded at that epoch (read from MongoDB by
``shared.store.rungs``), so every worker of a study applies the same rule to the same
shared evidence, with no central scheduler.

Both rules compare a trial's **best validation accuracy so far** (the highest over its
epochs up to now), so one noisy epoch at a rung does not end a trial that was doing well.

* ``median`` (Optuna's ``MedianPruner``): after epoch ``e >= min_epochs``, stop when the
  value is below the median of the other trials' values at ``e``, once at least
  ``startup`` other trials reached ``e``.
* ``asha`` (asynchronous successive halving, Li et al., MLSys 2020, stopping variant as in
  Ray Tune's ``AsyncHyperBandScheduler``): rungs at ``min_epochs * eta**k``; at a rung a
  trial continues only when its value is at least the ``1 - 1/eta`` quantile of the values
  recorded there before it (linear interpolation, as ``numpy.nanpercentile``), i.e. in the
  top ``1/eta``. The first trial at a rung always continues: no worker waits for a rung
  to fill.

No rule decides at ``max_epochs`` (R): the trial has spent its whole budget by then, so
there is nothing left to save, and a complete trial is never marked pruned.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from shared.errors import ConfigError

KINDS = ("none", "median", "asha")
DEFAULT_KIND = "asha"
DEFAULT_MIN_EPOCHS = 1
DEFAULT_REDUCTION_FACTOR = 3
DEFAULT_STARTUP = 5


def _whole(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"pruner {name} must be a whole number >= {low}, got {value!r}")
    return value


@dataclass(frozen=True)
class PrunerConfig:
    """The rule a study prunes by; stored in every job so all workers apply the same one."""

    kind: str = DEFAULT_KIND
    min_epochs: int = DEFAULT_MIN_EPOCHS  # ASHA's first rung; the median rule's warm-up
    reduction_factor: int = DEFAULT_REDUCTION_FACTOR  # ASHA's eta
    startup: int = DEFAULT_STARTUP  # the median rule's minimum number of other trials
    max_epochs: int = 50  # R, the largest resource: the trial's epoch budget

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"--pruner must be one of {', '.join(KINDS)}, got {self.kind!r}")
        _whole("min_epochs", self.min_epochs, 1)
        _whole("reduction_factor", self.reduction_factor, 2)
        _whole("startup", self.startup, 1)
        _whole("max_epochs", self.max_epochs, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PrunerConfig:
        """``None`` (a study posted before pruning existed) means no pruning."""
        if not d:
            return cls(kind="none")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown pruner field(s) {unknown}")
        return cls(**dict(d))

    def rungs(self) -> tuple[int, ...]:
        """ASHA's rungs below R: ``min_epochs * eta**k < max_epochs``."""
        out, epoch = [], self.min_epochs
        while epoch < self.max_epochs:
            out.append(epoch)
            epoch *= self.reduction_factor
        return tuple(out)

    def judges_at(self, epoch: int) -> bool:
        """Whether a trial records its value, and is judged, at the end of ``epoch``."""
        if self.kind == "median":
            return self.min_epochs <= epoch < self.max_epochs
        if self.kind == "asha":
            return epoch in self.rungs()
        return False


@dataclass(frozen=True)
class Decision:
    """One judgement at one epoch: what was compared, against what, and the verdict."""

    rule: str
    epoch: int
    value: float
    threshold: float | None  # the median or ASHA's cutoff; None when too few to compare
    compared: tuple[float, ...]
    prune: bool

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "compared": list(self.compared)}

    def reason(self) -> str:
        if self.threshold is None:
            return f"{self.rule} at epoch {self.epoch}: too few trials to compare"
        verdict = "below" if self.prune else "at or above"
        return (
            f"{self.rule} at epoch {self.epoch}: best val_accuracy {self.value:.4f} {verdict} "
            f"{self.threshold:.4f} over {len(self.compared)} other trial(s)"
        )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation, as numpy's default;
    NaN for no values."""
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return data[low] + (data[high] - data[low]) * (pos - low)


def median_threshold(cfg: PrunerConfig, others: Sequence[float]) -> float | None:
    return statistics.median(others) if len(others) >= cfg.startup else None


def asha_threshold(cfg: PrunerConfig, others: Sequence[float]) -> float | None:
    """The cutoff of the top ``1/eta``: the ``(1 - 1/eta)`` quantile of earlier arrivals."""
    if not others:
        return None
    return percentile(others, (1.0 - 1.0 / cfg.reduction_factor) * 100.0)


def decide(cfg: PrunerConfig, epoch: int, value: float, others: Sequence[float]) -> Decision | None:
    """The verdict after ``epoch`` (1-based) for a trial whose best val accuracy so far
    is ``value``, given the other trials' values at that epoch; None where the rule does
    not judge (no pruner, a warm-up epoch, between rungs, at R).

    Non-finite values among ``others`` are ignored (as ``nanpercentile`` does); a trial
    with a non-finite value of its own is pruned once anything can be compared.
    """
    if not cfg.judges_at(epoch):
        return None
    finite = tuple(float(v) for v in others if v is not None and math.isfinite(v))
    rule = median_threshold if cfg.kind == "median" else asha_threshold
    threshold = rule(cfg, finite)
    prune = threshold is not None and not (math.isfinite(value) and value >= threshold)
    return Decision(cfg.kind, epoch, float(value), threshold, finite, prune)
