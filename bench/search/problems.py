"""The benchmark functions the simulator tunes: a learning curve per configuration.

* ``mfh3``/``mfh6``: mf-prior-bench's synthetic multi-fidelity Hartmann functions (the
  ``good`` variants: low fidelities correlate well with the full one), computed, no
  download. Fidelity 1..100 is spread over ``max_epochs`` epochs.
* ``h6``: plain Hartmann-6, one epoch (no pruning possible): the issue's table, cheaply.

Values are minimised (Hartmann's minimum is negative); regret is ``value - optimum``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Hartmann-6 (Surjanovic & Bingham's library), minimum -3.32237 at a known point
_A6 = [
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
]
_P6 = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]
_ALPHA = [1.0, 1.2, 3.0, 3.2]
OPTIMA = {"h6": -3.32237, "h6curve": -3.32237, "mfh6": -3.32237, "mfh3": -3.86278}
NAMES = tuple(OPTIMA)


def hartmann6(x: tuple[float, ...]) -> float:
    total = 0.0
    for a, row, p in zip(_ALPHA, _A6, _P6, strict=True):
        total += a * math.exp(-sum(r * (xi - pi) ** 2 for r, xi, pi in zip(row, x, p, strict=True)))
    return -total


@dataclass(frozen=True)
class Problem:
    """``curve(x, epoch)``: the value after ``epoch`` (1..max_epochs) of configuration x."""

    name: str
    dims: int
    max_epochs: int
    optimum: float
    curve: Callable[[tuple[float, ...], int], float]

    def regret(self, x: tuple[float, ...]) -> float:
        return self.curve(x, self.max_epochs) - self.optimum

    def space(self) -> dict[str, Any]:
        """The hyperopt space the Strix engines see: one uniform label per dimension."""
        from hyperopt import hp

        return {f"x{i}": hp.uniform(f"x{i}", 0.0, 1.0) for i in range(self.dims)}


def _mfpbench(name: str, seed: int, max_epochs: int) -> Problem:
    import mfpbench

    bench = mfpbench.get(f"{name}_good", seed=seed)
    dims = int(name[-1])
    low, high = bench.fidelity_range[0], bench.fidelity_range[1]

    def curve(x: tuple[float, ...], epoch: int) -> float:
        fid = round(low + (high - low) * epoch / max_epochs)
        config = bench.Config.from_dict({f"X_{i}": float(v) for i, v in enumerate(x)})
        return float(bench.query(config, at=fid).error)

    return Problem(name, dims, max_epochs, OPTIMA[name], curve)


def get(name: str, seed: int = 1, max_epochs: int = 9) -> Problem:
    if name == "h6":
        return Problem("h6", 6, 1, OPTIMA["h6"], lambda x, _epoch: hartmann6(x))
    if name == "h6curve":  # needs no package: CI's multi-fidelity case (rank-preserving curve)
        return Problem(
            name,
            6,
            max_epochs,
            OPTIMA[name],
            lambda x, e: hartmann6(x) * (0.5 + 0.5 * e / max_epochs),
        )
    if name in ("mfh3", "mfh6"):
        return _mfpbench(name, seed, max_epochs)
    raise ValueError(f"problem {name!r} is unknown; use one of {', '.join(NAMES)}")
