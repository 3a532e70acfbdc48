"""Which GPUs this host has, decided before TensorFlow is imported.

Order: ``--fake-gpus N`` / ``STRIX_FAKE_GPUS=N`` (tests and benchmarks: N pretend GPUs,
CPU compute), ``--gpus 0,1`` / ``STRIX_GPUS`` (an explicit list), then ``nvidia-smi``;
none means CPU-only.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from shared.config import defaults
from shared.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inventory:
    indices: tuple[int, ...]
    fake: bool = False
    names: tuple[str, ...] = ()

    @property
    def cpu_only(self) -> bool:
        return not self.indices


def _parse_list(value: str, source: str) -> tuple[int, ...]:
    try:
        indices = tuple(int(p) for p in value.split(",") if p.strip())
    except ValueError:
        raise ConfigError(
            f"{source}={value!r} is not a comma-separated list of GPU indices; use e.g. 0,1"
        ) from None
    if any(i < 0 for i in indices):
        raise ConfigError(f"{source}={value!r} has a negative GPU index")
    return indices


def _nvidia_smi() -> tuple[tuple[int, ...], tuple[str, ...]]:
    if shutil.which("nvidia-smi") is None:
        return (), ()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as e:
        log.warning("nvidia-smi failed (%s); running CPU-only", e)
        return (), ()
    rows = [line.split(",", 1) for line in out.strip().splitlines() if line.strip()]
    return tuple(int(r[0]) for r in rows), tuple(r[1].strip() for r in rows)


def detect(fake: str | None = None, listed: str | None = None) -> Inventory:
    """``fake`` and ``listed`` are the resolved --fake-gpus / --gpus settings."""
    if fake:
        if not fake.isdigit():
            raise ConfigError(f"{defaults.ENV_FAKE_GPUS}={fake!r} must be a GPU count, e.g. 2")
        return Inventory(tuple(range(int(fake))), fake=True)
    if listed:
        return Inventory(_parse_list(listed, defaults.ENV_GPUS))
    indices, names = _nvidia_smi()
    return Inventory(indices, names=names)


def forced_gpu(inventory: Inventory, value: str | None) -> int | None:
    """``value`` is the resolved --gpu setting."""
    if value in (None, ""):
        return None
    (index,) = _parse_list(value, defaults.ENV_GPU) or (None,)
    if index is None or index not in inventory.indices:
        raise ConfigError(
            f"{defaults.ENV_GPU}={value!r} but this host's GPUs are {list(inventory.indices)}; "
            f"unset {defaults.ENV_GPU} or pick one of them"
        )
    return index


def pin(index: int | None, inventory: Inventory) -> None:
    """Make this process see only its GPU. Must run before TensorFlow is imported.

    Memory growth is switched on so several light trials can share one GPU instead of
    the first one grabbing all of its memory.
    """
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if inventory.fake:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # pretend GPUs must not grab a real one
    elif index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
