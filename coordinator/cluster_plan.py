"""The pure half of ``strix cluster``: GPU inventory + options -> the containers to run.

Inside a one-GPU container its GPU is CUDA device 0 whatever its host index, so a worker
gets ``STRIX_GPU=0`` and keeps its leases under ``<host>-gpu<index>``: the workers of one
physical GPU share one lease pool whose capacity is their number. Nothing here talks to
Docker or reads the environment; :mod:`coordinator.cluster` does both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from shared.config import defaults
from shared.errors import ConfigError
from shared.store import redact

LABEL_CLUSTER = "org.strix.cluster"
LABEL_ROLE = "org.strix.role"
LABEL_GPU = "org.strix.gpu"
MONGO_PORT = 27017
CACHE_MOUNT = "/cache"
DATA_MOUNT = "/data/fashion-mnist"
USER_ENV = "MONGO_ROOT_USER"
PASSWORD_ENV = "MONGO_ROOT_PASSWORD"
MAX_PER_GPU = 64
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_MONGO_PING = "quit(db.adminCommand('ping').ok ? 0 : 1)"


@dataclass(frozen=True, repr=False)
class ContainerSpec:
    """One container to start: everything ``docker run`` needs, nothing engine-specific."""

    name: str
    role: str
    image: str
    env: Mapping[str, str]
    labels: Mapping[str, str]
    volumes: tuple[tuple[str, str, str], ...] = ()  # (source, target, "rw" | "ro")
    gpu_ids: tuple[str, ...] = ()
    healthcheck: tuple[str, ...] = ()

    def redacted_env(self) -> dict[str, str]:
        return {k: "***" if "PASSWORD" in k else redact(v) for k, v in self.env.items()}

    def __repr__(self) -> str:
        shown = f"name={self.name!r}, image={self.image!r}, gpu_ids={self.gpu_ids!r}"
        return f"ContainerSpec({shown}, env={self.redacted_env()!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class ClusterOptions:
    """What the user asked for, resolved; ``gpus=None`` means every GPU of the inventory."""

    mongo_password: str = field(repr=False)
    gpus: tuple[int, ...] | None = None
    light_per_gpu: int = 3
    heavy: bool = False
    image: str = "strix-gpu:latest"
    mongo_image: str = "mongo:7"
    network: str = "strix"
    project: str = "strix"
    mongo_user: str = "strix"
    host_name: str = "docker-host"
    data_dir: str | None = None
    db: str | None = None


@dataclass(frozen=True)
class ClusterPlan:
    project: str
    network: str
    volumes: tuple[str, ...]
    mongo: ContainerSpec
    workers: tuple[ContainerSpec, ...]

    @property
    def containers(self) -> tuple[ContainerSpec, ...]:
        return (self.mongo, *self.workers)

    def describe(self) -> str:
        """Human summary without secrets (for ``--dry-run`` and logs)."""
        lines = [f"network {self.network}; volumes {', '.join(self.volumes)}"]
        for spec in self.containers:
            gpu = f" gpu {','.join(spec.gpu_ids)}" if spec.gpu_ids else ""
            lines.append(f"{spec.name}: {spec.image}{gpu}")
            lines += [f"    {k}={v}" for k, v in sorted(spec.redacted_env().items())]
        return "\n".join(lines)


def parse_gpus(text: str) -> tuple[int, ...]:
    """``"0,1"`` -> ``(0, 1)``; anything else is a ConfigError naming the bad part."""
    parts = [p.strip() for p in str(text).split(",")]
    if not text or not all(parts):
        raise ConfigError(f"--gpus {text!r} has an empty entry; expected indices like 0,1")
    bad = ", ".join(p for p in parts if not p.isdigit())
    if bad:
        raise ConfigError(
            f"--gpus {text!r}: {bad} not GPU indices; expected e.g. 0,1 (nvidia-smi -L)"
        )
    gpus = tuple(int(p) for p in parts)
    if len(set(gpus)) != len(gpus):
        raise ConfigError(f"--gpus {text!r} names a GPU twice; list each index once")
    return gpus


def _check_names(o: ClusterOptions) -> None:
    for what, value in (("--project", o.project), ("--network", o.network)):
        if not _NAME.match(value):
            raise ConfigError(f"{what} {value!r} is not a valid Docker name; use [a-zA-Z0-9_.-]")
    for what, value in (("--image", o.image), ("--mongo-image", o.mongo_image)):
        if not value.strip() or any(c.isspace() for c in value):
            raise ConfigError(f"{what} {value!r} is not an image reference, e.g. strix-gpu:latest")


def _check_options(inventory: Sequence[int], o: ClusterOptions) -> tuple[int, ...]:
    _check_names(o)
    if not o.mongo_password or not o.mongo_user:
        raise ConfigError(
            f"no MongoDB user or password: export {PASSWORD_ENV}=$(openssl rand -hex 24) "
            "or pass --env-file .env (see .env.example)"
        )
    if not o.heavy and not 1 <= o.light_per_gpu <= MAX_PER_GPU:
        n = o.light_per_gpu
        raise ConfigError(
            f"--light-per-gpu {n}: expected 1..{MAX_PER_GPU}; --heavy gives 1 per GPU"
        )
    if o.data_dir is not None and not Path(o.data_dir).is_absolute():
        raise ConfigError(f"--data-dir {o.data_dir!r} must be an absolute path")
    return _pick_gpus(inventory, o.gpus)


def _pick_gpus(inventory: Sequence[int], wanted: tuple[int, ...] | None) -> tuple[int, ...]:
    if wanted is None:
        if not inventory:
            raise ConfigError(
                "no GPUs found on this host (nvidia-smi lists none and STRIX_GPUS is unset); "
                "pass --gpus 0,1 or use `docker compose --profile cpu` for CPU workers"
            )
        return tuple(inventory)
    missing = [g for g in wanted if inventory and g not in inventory]
    if missing:
        have = list(inventory)
        raise ConfigError(f"--gpus asks for GPU {missing} but this host has {have} (nvidia-smi -L)")
    return wanted


def _mongo_uri(o: ClusterOptions) -> str:
    user, password = quote(o.mongo_user, safe=""), quote(o.mongo_password, safe="")
    db = quote(o.db, safe="") if o.db else ""
    return f"mongodb://{user}:{password}@{o.project}-mongo:{MONGO_PORT}/{db}?authSource=admin"


def _mongo_spec(o: ClusterOptions, labels: dict[str, str]) -> ContainerSpec:
    pw = o.mongo_password
    return ContainerSpec(
        name=f"{o.project}-mongo",
        role="mongo",
        image=o.mongo_image,
        env={"MONGO_INITDB_ROOT_USERNAME": o.mongo_user, "MONGO_INITDB_ROOT_PASSWORD": pw},
        labels={**labels, LABEL_ROLE: "mongo"},
        volumes=((f"{o.project}-mongo-data", "/data/db", "rw"),),
        healthcheck=("CMD", "mongosh", "--quiet", "--eval", _MONGO_PING),
    )


def _worker_spec(o: ClusterOptions, gpu: int, k: int, per_gpu: int, labels: dict) -> ContainerSpec:
    env = {
        defaults.ENV_MONGO: _mongo_uri(o),
        defaults.ENV_GPUS: "0",  # the one GPU this container sees is CUDA device 0
        defaults.ENV_GPU: "0",
        defaults.ENV_HOST: f"{o.host_name}-gpu{gpu}",
        defaults.ENV_GPU_CAPACITY: str(per_gpu),
        defaults.ENV_CACHE_DIR: CACHE_MOUNT,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    volumes = [(f"{o.project}-cache", CACHE_MOUNT, "rw")]
    if o.data_dir is not None:
        env[defaults.ENV_DATA_DIR] = DATA_MOUNT
        volumes.append((o.data_dir, DATA_MOUNT, "ro"))
    return ContainerSpec(
        name=f"{o.project}-worker-gpu{gpu}-{k + 1}",
        role="worker",
        image=o.image,
        env=env,
        labels={**labels, LABEL_ROLE: "worker", LABEL_GPU: str(gpu)},
        volumes=tuple(volumes),
        gpu_ids=(str(gpu),),
    )


def plan_cluster(inventory: Sequence[int], options: ClusterOptions) -> ClusterPlan:
    """The containers for ``options`` on a host whose GPUs are ``inventory`` (pure).

    An empty inventory means "unknown" when ``--gpus`` is given (a dry run on a laptop).
    """
    gpus = _check_options(inventory, options)
    per_gpu = 1 if options.heavy else options.light_per_gpu
    labels = {LABEL_CLUSTER: options.project}
    workers = [_worker_spec(options, g, k, per_gpu, labels) for g in gpus for k in range(per_gpu)]
    volumes = (f"{options.project}-mongo-data", f"{options.project}-cache")
    mongo = _mongo_spec(options, labels)
    return ClusterPlan(options.project, options.network, volumes, mongo, tuple(workers))
