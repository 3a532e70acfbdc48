"""MongoDB plus GPU workers on one Docker host, each worker container given one GPU.

``docker compose`` hands every worker all GPUs and lets leases share them; this is for a
hard boundary instead: one device request per container, so no trial touches another GPU.
Inside such a container its GPU is CUDA device 0 whatever its host index, so the worker
gets ``STRIX_GPU=0`` and keeps its leases under ``<host>-gpu<index>``: the workers of one
physical GPU share one lease pool whose capacity is their number.
Planning is a pure function (testable without an engine); only :func:`main` talks to Docker.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from shared import defaults
from shared.errors import ConfigError, StrixError
from shared.store import redact

log = logging.getLogger(__name__)

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
_SECOND_NS = 1_000_000_000
_HEALTH_TIMING = {"interval": 10, "timeout": 5, "retries": 6, "start_period": 30}

EXAMPLES = """
examples:
  export MONGO_ROOT_PASSWORD=$(openssl rand -hex 24)
  python -m coordinator.cluster up --gpus 0,1 --light-per-gpu 3   # 6 workers, 3 per GPU
  python -m coordinator.cluster up --heavy --data-dir ./data/fashion-mnist
  python -m coordinator.cluster up --gpus 0 --env-file .env --dry-run
  python -m coordinator.cluster status
  python -m coordinator.cluster down            # keeps the MongoDB and cache volumes
  python -m coordinator.cluster down --volumes  # deletes them too
"""


class EngineUnavailable(StrixError):
    """No Docker engine answered; nothing was changed."""


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
    """What the user asked for; ``gpus=None`` means every GPU of the inventory."""

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


def _check_options(inventory: Sequence[int], o: ClusterOptions) -> tuple[int, ...]:
    for what, value in (("--project", o.project), ("--network", o.network)):
        if not _NAME.match(value):
            raise ConfigError(f"{what} {value!r} is not a valid Docker name; use [a-zA-Z0-9_.-]")
    for what, value in (("--image", o.image), ("--mongo-image", o.mongo_image)):
        if not value.strip() or any(c.isspace() for c in value):
            raise ConfigError(f"{what} {value!r} is not an image reference, e.g. strix-gpu:latest")
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


def run_kwargs(spec: ContainerSpec, network: str) -> dict[str, Any]:
    """Arguments for ``client.containers.run`` (pure: the docker SDK only builds dicts)."""
    from docker.types import DeviceRequest, Healthcheck

    kwargs: dict[str, Any] = {
        "image": spec.image,
        "name": spec.name,
        "hostname": spec.name,
        "environment": dict(spec.env),
        "labels": dict(spec.labels),
        "volumes": {src: {"bind": dst, "mode": mode} for src, dst, mode in spec.volumes},
        "network": network,
        "restart_policy": {"Name": "unless-stopped"},
        "detach": True,
    }
    if spec.gpu_ids:
        kwargs["device_requests"] = [
            DeviceRequest(driver="nvidia", device_ids=list(spec.gpu_ids), capabilities=[["gpu"]])
        ]
    if spec.healthcheck:  # durations in nanoseconds, retries a count
        timing = {k: v if k == "retries" else v * _SECOND_NS for k, v in _HEALTH_TIMING.items()}
        kwargs["healthcheck"] = Healthcheck(test=list(spec.healthcheck), **timing)
    return kwargs


# --- talking to the engine ------------------------------------------------------------


def connect() -> Any:
    """A live docker client, or EngineUnavailable with one line saying why."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        why = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        msg = f"no Docker engine answers ({why}); start Docker or set DOCKER_HOST"
        raise EngineUnavailable(msg) from None
    return client


def _ensure_shared(client: Any, plan: ClusterPlan) -> None:
    labels = {LABEL_CLUSTER: plan.project}
    if not client.networks.list(names=[plan.network]):
        client.networks.create(plan.network, driver="bridge", labels=labels)
    for name in plan.volumes:
        client.volumes.create(name=name, labels=labels)  # returns the existing one if any


def _start(client: Any, spec: ContainerSpec, network: str) -> Any:
    from docker.errors import NotFound

    try:
        container = client.containers.get(spec.name)
    except NotFound:
        log.info("starting %s", spec.name)
        return client.containers.run(**run_kwargs(spec, network))
    log.info("%s exists (%s): kept, not recreated", spec.name, container.status)
    container.start()  # a no-op when it is running
    return container


def _wait_healthy(container: Any, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs.get("State", {}).get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(2)
    name = container.name
    raise StrixError(f"{name} not healthy after {wait_s:.0f}s; see `docker logs {name}` or --wait")


def up(client: Any, plan: ClusterPlan, wait_s: float) -> None:
    _ensure_shared(client, plan)
    _wait_healthy(_start(client, plan.mongo, plan.network), wait_s)
    for spec in plan.workers:
        _start(client, spec, plan.network)
    print(f"cluster {plan.project}: mongo + {len(plan.workers)} workers running")


def _ours(client: Any, project: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"{LABEL_CLUSTER}={project}"})


def down(client: Any, project: str, remove_volumes: bool) -> None:
    containers = sorted(_ours(client, project), key=lambda c: c.labels.get(LABEL_ROLE) == "mongo")
    for container in containers:  # workers first, so none loses MongoDB mid-trial
        log.info("removing %s", container.name)
        container.stop(timeout=60)
        container.remove()
    for net in client.networks.list(filters={"label": f"{LABEL_CLUSTER}={project}"}):
        net.remove()
    if remove_volumes:
        for volume in client.volumes.list(filters={"label": f"{LABEL_CLUSTER}={project}"}):
            volume.remove()
    print(f"cluster {project}: removed {len(containers)} containers")


def status(client: Any, project: str) -> None:
    containers = sorted(_ours(client, project), key=lambda c: c.name)
    if not containers:
        print(f"cluster {project}: no containers")
        return
    print(f"{'NAME':32} {'ROLE':8} {'GPU':4} STATE")
    for c in containers:
        role, gpu = c.labels.get(LABEL_ROLE, "?"), c.labels.get(LABEL_GPU, "-")
        print(f"{c.name:32} {role:8} {gpu:4} {c.status}")


# --- command line ---------------------------------------------------------------------


def read_env_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines of a compose-style .env file (comments and quotes allowed)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--env-file {path}: cannot read it ({exc.strerror})") from None
    values = {}
    for line in text.splitlines():
        line = line.strip().removeprefix("export ").strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip("'\"")
    return values


def local_inventory() -> tuple[int, ...]:
    from shared import settings
    from worker.gpus import detect  # the worker's own rule: STRIX_GPUS, then nvidia-smi

    return detect(listed=settings.resolve({}, ["gpus"])["gpus"]).indices


def _options(args: argparse.Namespace) -> ClusterOptions:
    source = read_env_file(args.env_file) if args.env_file else os.environ
    return ClusterOptions(
        mongo_password=source.get(args.password_env, ""),
        mongo_user=args.mongo_user or source.get(USER_ENV) or "strix",
        gpus=parse_gpus(args.gpus) if args.gpus is not None else None,
        light_per_gpu=args.light_per_gpu,
        heavy=args.heavy,
        image=args.image,
        mongo_image=args.mongo_image,
        network=args.network or args.project,
        project=args.project,
        host_name=args.host_name or socket.gethostname(),
        data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else None,
        db=defaults.setting(args.db, defaults.ENV_DB, None),  # type: ignore[arg-type]
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m coordinator.cluster",
        description="Start, inspect or remove MongoDB plus one-GPU-each Strix workers on "
        "this Docker host (docker compose is the alternative that shares all GPUs).",
        epilog=EXAMPLES,
        formatter_class=fmt,
    )
    parser.add_argument("--project", default="strix", help="name prefix and label value")
    sub = parser.add_subparsers(dest="action", required=True)
    u = sub.add_parser("up", help="start mongo and workers", epilog=EXAMPLES, formatter_class=fmt)
    u.add_argument("--gpus", help="GPU indices, e.g. 0,1 (default: every GPU nvidia-smi lists)")
    mode = u.add_mutually_exclusive_group()
    mode.add_argument("--light-per-gpu", type=int, default=3, help="workers per GPU")
    mode.add_argument("--heavy", action="store_true", help="one worker per GPU")
    u.add_argument("--image", default="strix-gpu:latest", help="worker image (Dockerfile.gpu)")
    u.add_argument("--mongo-image", default="mongo:7")
    u.add_argument("--network", help="Docker network (default: the project name)")
    u.add_argument("--env-file", help=f"read {USER_ENV} and the password from this file")
    u.add_argument("--password-env", default=PASSWORD_ENV, help="variable holding the password")
    u.add_argument("--mongo-user", help=f"MongoDB root user (default: ${USER_ENV} or strix)")
    u.add_argument("--host-name", help="lease host name prefix (default: this hostname)")
    u.add_argument("--data-dir", help="host directory of the idx files, mounted read-only")
    u.add_argument("--db", help=f"database of the workers (env {defaults.ENV_DB}; default strix)")
    u.add_argument("--wait", type=float, default=120.0, help="seconds to wait for MongoDB")
    u.add_argument("--dry-run", action="store_true", help="print the plan; touch nothing")
    d = sub.add_parser("down", help="remove the containers", epilog=EXAMPLES, formatter_class=fmt)
    d.add_argument("--volumes", action="store_true", help="also delete MongoDB data and cache")
    sub.add_parser("status", help="list the containers", epilog=EXAMPLES, formatter_class=fmt)
    return parser


def _dispatch(args: argparse.Namespace) -> None:
    if args.action == "up":
        plan = plan_cluster(local_inventory(), _options(args))
        if args.dry_run:
            print(plan.describe())
            return
        up(connect(), plan, args.wait)
    elif args.action == "down":
        down(connect(), args.project, args.volumes)
    else:
        status(connect(), args.project)


def _fail(message: str, code: int) -> int:
    first = (redact(message).splitlines() or ["unknown error"])[0][:300]
    print(f"cluster: error: {first}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 for bad options or no engine, 1 when the engine refuses."""
    from docker.errors import DockerException

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        _dispatch(args)
    except (ConfigError, EngineUnavailable) as exc:
        return _fail(str(exc), 2)
    except StrixError as exc:
        return _fail(str(exc), 1)
    except DockerException as exc:  # APIError and friends: one line, no traceback
        return _fail(f"Docker refused: {exc}", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
