"""Which arrays a trial sees: :class:`DataSpec`, part of every job document.

It is checked where it is built, so a bad size or limit is one line at the entry point,
long before OpenCV or TensorFlow load; :mod:`shared.data.cache` turns it into arrays.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from shared.config import defaults
from shared.data.idx import CLASS_NAMES, FILES
from shared.errors import ConfigError

# OpenCV's resize kernels by name; shared.data.cache maps each to its cv2 flag
INTERPOLATIONS = ("area", "cubic", "linear", "nearest")


def check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def check_look(channels: object, interpolation: object) -> None:
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(
            f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}"
        )


SMALL_VALIDATION = 1000  # images; below this, small_validation_note warns


@dataclass(frozen=True)
class DataSpec:
    """Everything that decides which arrays a trial sees; part of every job document."""

    image_size: int = defaults.IMAGE_SIZE
    channels: int = defaults.CHANNELS
    interpolation: str = defaults.INTERPOLATION
    validation_fraction: float = defaults.VALIDATION_FRACTION
    seed: int = defaults.SPLIT_SEED
    limit: int | None = None
    test_limit: int | None = None

    def __post_init__(self) -> None:
        check_int("image_size", self.image_size, 8, 1024)
        check_look(self.channels, self.interpolation)
        vf = self.validation_fraction
        if isinstance(vf, bool) or not isinstance(vf, int | float) or not 0 < vf < 1:
            raise ConfigError(f"validation_fraction must be a number in (0, 1), got {vf!r}")
        check_int("seed", self.seed, 0, 2**32 - 1)
        if self.limit is not None:
            self._check_limit(vf)
        if self.test_limit is not None:
            check_int("test_limit", self.test_limit, len(CLASS_NAMES), FILES["x_test"][2])

    def _check_limit(self, vf: float) -> None:
        check_int("limit", self.limit, 20, FILES["x_train"][2])
        n, n_val = int(self.limit), self.validation_size  # type: ignore[arg-type]
        if min(n_val, n - n_val) < len(CLASS_NAMES):
            raise ConfigError(
                f"limit={n} with validation_fraction={vf} gives {n_val} validation and "
                f"{n - n_val} training images; both need at least {len(CLASS_NAMES)} "
                "(one per class): raise limit"
            )

    @property
    def validation_size(self) -> int:
        """Images in the validation split: every trial's score is measured on these."""
        n = FILES["x_train"][2] if self.limit is None else int(self.limit)
        return math.ceil(self.validation_fraction * n)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        if not isinstance(d, dict):
            raise ConfigError(f"a data spec must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown data spec keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)


def small_validation_note(spec: DataSpec, accuracy: float = 0.85) -> str | None:
    """Why a small validation split can pick the wrong "best" trial: one trial's val
    accuracy wobbles by a binomial standard deviation, ±2.5 pp on 200 images at 85 %.
    None from SMALL_VALIDATION images on (±1.1 pp or less)."""
    n_val = spec.validation_size
    if n_val >= SMALL_VALIDATION:
        return None
    sd = 100 * math.sqrt(accuracy * (1 - accuracy) / n_val)
    enough = math.ceil(SMALL_VALIDATION / spec.validation_fraction)
    return (
        f"the validation split holds {n_val} images, so a trial's val accuracy is uncertain "
        f"by about ±{sd:.1f} pp and the best trial may test lower than others; "
        f"for a surer pick use --limit {enough} or more"
    )
