"""``strix cluster`` (``python -m coordinator.cluster``): MongoDB plus GPU workers on one
Docker host, each worker container given one GPU.

``docker compose`` hands every worker all GPUs and lets leases share them; this is for a
hard boundary instead: one device request per container, so no trial touches another GPU.
The plan is a pure function (:mod:`coordinator.cluster_plan`, testable without an
engine); this module resolves the options and talks to Docker.

Exit codes: 0 done, 2 bad options or no engine answering, 1 when the engine refuses.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from coordinator.cluster_plan import (
    LABEL_CLUSTER,
    LABEL_GPU,
    LABEL_ROLE,
    PASSWORD_ENV,
    USER_ENV,
    ClusterOptions,
    ClusterPlan,
    ContainerSpec,
    parse_gpus,
    plan_cluster,
)
from shared.config import cli, settings
from shared.errors import ConfigError, StrixError
from shared.store import redact

log = logging.getLogger(__name__)

PROG = "strix cluster"
_SECOND_NS = 1_000_000_000
_HEALTH_TIMING = {"interval": 10, "timeout": 5, "retries": 6, "start_period": 30}

EXAMPLES = """
  export MONGO_ROOT_PASSWORD=$(openssl rand -hex 24)
  strix cluster up --gpus 0,1 --light-per-gpu 3   # 6 workers, 3 per GPU
  strix cluster up --heavy --data-dir ./data/fashion-mnist
  strix cluster up --gpus 0 --env-file .env --dry-run
  strix cluster status
  python -m coordinator.cluster down            # keeps the MongoDB and cache volumes
  python -m coordinator.cluster down --volumes  # deletes them too
"""

__all__ = ["ClusterOptions", "ClusterPlan", "ContainerSpec", "parse_gpus", "plan_cluster"]


class EngineUnavailable(StrixError):
    """No Docker engine answered; nothing was changed."""


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
    from worker.gpus import detect  # the worker's own rule: STRIX_GPUS, then nvidia-smi

    return detect(listed=settings.resolve({}, ["gpus"])["gpus"]).indices


def _options(args: argparse.Namespace) -> ClusterOptions:
    """The options of ``up``, resolved once: flags, then the environment (or --env-file)."""
    source = read_env_file(args.env_file) if args.env_file else os.environ
    v = settings.resolve(args, ["db", "data_dir"])
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
        data_dir=str(Path(v["data_dir"]).expanduser().resolve()) if v["data_dir"] else None,
        db=v["db"],
    )


def _action(sub: Any, parent: argparse.ArgumentParser, name: str, text: str) -> Any:
    return sub.add_parser(
        name,
        help=text,
        description=text,
        epilog=parent.epilog,
        formatter_class=parent.formatter_class,
    )


def _add_up(u: argparse.ArgumentParser) -> None:
    a = u.add_argument
    a("--gpus", help="GPU indices, e.g. 0,1 (default: every GPU nvidia-smi lists)")
    mode = u.add_mutually_exclusive_group()
    mode.add_argument("--light-per-gpu", type=int, default=3, help="workers per GPU")
    mode.add_argument("--heavy", action="store_true", help="one worker per GPU")
    a("--image", default="strix-gpu:latest", help="worker image (Dockerfile.gpu)")
    a("--mongo-image", default="mongo:7", help="MongoDB image")
    a("--network", help="Docker network (default: the project name)")
    a("--env-file", help=f"read {USER_ENV} and the password from this file")
    a("--password-env", default=PASSWORD_ENV, help="variable holding the password")
    a("--mongo-user", help=f"MongoDB root user (default: ${USER_ENV} or strix)")
    a("--host-name", help="lease host name prefix (default: this hostname)")
    a("--data-dir", help="host directory of the idx files, mounted read-only (env STRIX_DATA_DIR)")
    settings.add(u, "db")
    a("--wait", type=float, default=120.0, help="seconds to wait for MongoDB")
    a("--dry-run", action="store_true", help="print the plan; touch nothing")


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(
        PROG,
        "Start, inspect or remove MongoDB plus one-GPU-each Strix workers on this Docker "
        "host (docker compose is the alternative that shares all GPUs).",
        EXAMPLES,
    )
    p.add_argument("--project", default="strix", help="name prefix and label value")
    sub = p.add_subparsers(dest="action", required=True, metavar="{up,down,status}")
    _add_up(_action(sub, p, "up", "start mongo and workers"))
    down_parser = _action(sub, p, "down", "remove the containers")
    down_parser.add_argument(
        "--volumes", action="store_true", help="also delete MongoDB data and cache"
    )
    _action(sub, p, "status", "list the containers")
    return p


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


def _first_line(message: str) -> str:
    return (redact(message).splitlines() or ["unknown error"])[0][:300]


def run(args: argparse.Namespace) -> int:
    """Bad options and a missing engine are StrixErrors (exit 2, through cli.main); what
    the engine refuses once reached is reported here with exit 1."""
    from docker.errors import DockerException

    try:
        _dispatch(args)
    except (ConfigError, EngineUnavailable) as exc:
        raise type(exc)(_first_line(str(exc))) from None
    except (StrixError, DockerException) as exc:
        prefix = "" if isinstance(exc, StrixError) else "Docker refused: "
        print(f"{PROG}: error: {_first_line(prefix + str(exc))}", file=sys.stderr)
        return cli.EXIT_FAILED
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 for bad options or no engine, 1 when the engine refuses."""
    return cli.main(PROG, build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
