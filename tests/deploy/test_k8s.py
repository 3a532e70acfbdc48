"""deploy/k8s, checked without a cluster.

Every resource that kustomization.yaml lists (and every Kubernetes snippet in
docs/deploy.md) is validated by kubernetes-validate, strictly, against the newest
Kubernetes version it knows. Then, as tests/deploy/test_deploy.py does for compose: the images,
environment variables and commands in the manifests must exist in the project, and the
pieces must fit together (selectors, the Secret, the MongoDB URI, the grace period).
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.config import defaults

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OTHER_ENV = {
    "TF_CPP_MIN_LOG_LEVEL",
    "PYTHONUNBUFFERED",
    "MONGO_INITDB_ROOT_USERNAME",
    "MONGO_INITDB_ROOT_PASSWORD",
}
ENV_NAMES = {v for k, v in vars(defaults).items() if k.startswith("ENV_")} | OTHER_ENV
REFERENCE = re.compile(r"\$\((\w+)\)")  # Kubernetes' dependent-variable syntax
WORKER, MONGO = "worker", "mongo"


@cache
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))


@cache
def resources() -> tuple[tuple[str, dict], ...]:
    found = []
    for name in kustomization()["resources"]:
        text = (K8S / name).read_text(encoding="utf-8")
        found += [(name, doc) for doc in yaml.safe_load_all(text) if doc]
    return tuple(found)


def component_of(doc: dict) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def one(kind: str, component: str | None = None) -> dict:
    docs = [
        d
        for _, d in resources()
        if d["kind"] == kind and (component is None or component_of(d) == component)
    ]
    assert len(docs) == 1, f"expected one {kind} {component or ''}, found {len(docs)}"
    return docs[0]


def workloads() -> list[dict]:
    return [d for _, d in resources() if d["kind"] in {"Deployment", "StatefulSet", "Job"}]


def containers() -> list[tuple[dict, dict]]:
    """(workload, container) for every container of every workload."""
    return [(w, c) for w in workloads() for c in w["spec"]["template"]["spec"]["containers"]]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def strix_containers() -> list[tuple[dict, dict]]:
    return [(w, c) for w, c in containers() if c["image"].startswith("strix-")]


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


# --- the manifests are valid Kubernetes --------------------------------------------------


def test_kustomization_deploys_every_manifest_into_one_namespace() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, f"not listed: {on_disk - listed}; missing: {listed - on_disk}"
    assert kustomization()["namespace"] == one("Namespace")["metadata"]["name"] == "strix"
    for name, doc in resources():
        assert "namespace" not in doc["metadata"], f"{name}: kustomize sets the namespace"


def test_a_current_kubernetes_version_is_used() -> None:
    major, minor = map(int, kubernetes_validate.latest_version().split(".")[:2])
    assert (major, minor) >= (1, 33), "upgrade kubernetes-validate: its schemas are old"


@pytest.mark.parametrize("index", range(len(resources())), ids=lambda i: resources()[i][0])
def test_manifest_validates_against_the_kubernetes_schema(index: int) -> None:
    _, doc = resources()[index]
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_validator_rejects_broken_manifests() -> None:
    """Proves the validation is live: a typo and a wrong type must both be reported."""
    version = kubernetes_validate.latest_version()
    typo = copy.deepcopy(one("Deployment"))
    spec = typo["spec"]["template"]["spec"]
    spec["terminationGracePeriodSecond"] = spec.pop("terminationGracePeriodSeconds")
    wrong_type = copy.deepcopy(one("Deployment"))
    wrong_type["spec"]["replicas"] = "two"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, version, strict=True)


def test_kubernetes_snippets_in_the_docs_validate() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]
    snippets = [b for b in blocks if "apiVersion" in b]
    assert snippets, "docs/deploy.md lost its time-slicing example"
    for doc in snippets:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


# --- images, variables and commands exist in the project ---------------------------------


def test_images_are_the_projects_own() -> None:
    services = compose()["services"]
    expected = {
        WORKER: services["worker"]["image"].split(":")[0],  # strix-gpu, Dockerfile.gpu
        "prepare": services["prepare"]["image"].split(":")[0],  # strix-cpu, Dockerfile.worker
        "coordinator": services["coordinator"]["image"].split(":")[0],
        MONGO: re.fullmatch(r"\$\{MONGO_IMAGE:-([^}]+)\}", services["mongo"]["image"])[1],
    }
    used = set()
    for workload, container in containers():
        component = component_of(workload)
        image = container["image"]
        want = expected[component]
        assert image == want or image.split(":")[0] == want, f"{component}: {image}, not {want}"
        used.add(image.split(":")[0])
    renamed = {i["name"] for i in kustomization()["images"]}
    assert renamed == used, "kustomization.yaml must let every image be pointed at a registry"
    assert {"strix-gpu", "strix-cpu"} <= used


def test_only_variables_of_the_project_are_set() -> None:
    for workload, container in containers():
        where = f"{workload['metadata']['name']}/{container['name']}"
        names = [e["name"] for e in container.get("env", [])]
        referenced = set()
        for i, entry in enumerate(container.get("env", [])):
            for ref in REFERENCE.findall(entry.get("value", "")):
                assert ref in names[:i], f"{where}: $({ref}) must be defined above {entry['name']}"
                referenced.add(ref)
        unknown = set(names) - ENV_NAMES - referenced
        assert not unknown, f"{where} sets {unknown}: not in shared/config/defaults.py"
        helpers = referenced - ENV_NAMES
        for helper in helpers:  # downward-API helpers only feed STRIX_* values
            assert "fieldRef" in env_of(container)[helper].get("valueFrom", {}), helper


def test_secret_references_match_the_generated_secret() -> None:
    (generator,) = kustomization()["secretGenerator"]
    assert generator["options"]["disableNameSuffixHash"] is True
    (env_file,) = generator["envs"]
    example = (K8S / f"{env_file}.example").read_text(encoding="utf-8")
    keys = set(re.findall(r"^(\w+)=", example, flags=re.M))
    assert keys == {"MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"}
    assert re.search(r"^MONGO_INITDB_ROOT_PASSWORD=change-me$", example, flags=re.M)
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(K8S / env_file)], cwd=ROOT, timeout=30
    ).returncode
    assert ignored == 0, f"deploy/k8s/{env_file} holds the password: it must be git-ignored"
    refs = 0
    for _, container in containers():
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == generator["name"] and ref["key"] in keys, ref
                assert entry["name"] == ref["key"], "the same names as compose's .env"
                refs += 1
    assert refs >= 6, "mongo, workers and coordinator all read the root account"


@cache
def help_text(argv: tuple[str, ...]) -> str:
    head, *rest = argv
    exe = [sys.executable] if head == "python" else [str(Path(sys.executable).parent / head)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [*exe, *rest, "--help"], capture_output=True, text=True, timeout=180, cwd=ROOT, env=env
    )
    assert done.returncode == 0 and "usage:" in done.stdout, f"{argv} --help:\n{done.stderr}"
    return done.stdout


def test_commands_and_their_flags_exist() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    checked = set()
    for _, container in strix_containers():
        command = container["command"]
        if command[:2] == ["bash", "-c"]:  # the worker pod's supervisor
            script = container["args"][0]
            assert "strix-worker &" in script and "strix-worker" in scripts
            assert '"strix-worker"' in (ROOT / "Dockerfile.gpu").read_text(encoding="utf-8")
            assert "$(" not in script, "Kubernetes would expand $(...) in args"
            argv: tuple[str, ...] = ("strix-worker",)
            flags: list[str] = []
        else:
            argv = tuple(command)
            flags = [a for a in container.get("args", []) if a.startswith("--")]
        text = help_text(argv)
        for flag in flags:
            assert re.search(rf"{re.escape(flag)}\b", text), f"{' '.join(argv)} has no {flag}"
        checked.add(" ".join(argv))
    assert checked == {
        "strix-worker",
        "python -m shared.data prepare",
        "python -m coordinator.launch",
    }


# --- the pieces fit together ------------------------------------------------------------


def pod_labels(workload: dict) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_selectors_select_their_own_pods_only() -> None:
    for workload in workloads():
        if workload["kind"] != "Job":
            selector = workload["spec"]["selector"]["matchLabels"]
            assert matches(selector, pod_labels(workload)), workload["metadata"]["name"]
            others = [w for w in workloads() if w is not workload]
            assert not any(matches(selector, pod_labels(w)) for w in others)
    service = one("Service")
    mongo = one("StatefulSet")
    assert matches(service["spec"]["selector"], pod_labels(mongo))
    pdb = one("PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels(one("Deployment")))


def test_mongo_is_a_statefulset_with_a_pvc_a_secret_and_auth() -> None:
    mongo, service = one("StatefulSet"), one("Service")
    assert mongo["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None", "a StatefulSet's governing Service"
    (container,) = mongo["spec"]["template"]["spec"]["containers"]
    assert "--auth" in container["args"]
    assert {"MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"} <= set(env_of(container))
    (claim,) = mongo["spec"]["volumeClaimTemplates"]
    (mount,) = container["volumeMounts"]
    assert mount == {"name": claim["metadata"]["name"], "mountPath": "/data/db"}
    assert "ping" in " ".join(container["readinessProbe"]["exec"]["command"])
    assert "password" not in str(container["readinessProbe"]).lower()


def test_every_strix_pod_reaches_mongo_by_the_service_with_credentials() -> None:
    service = one("Service")
    host = service["metadata"]["name"]
    (port,) = service["spec"]["ports"]
    users = 0
    for workload, container in strix_containers():
        uri = env_of(container).get(defaults.ENV_MONGO, {}).get("value")
        if uri is None:
            continue
        users += 1
        assert uri == (
            "mongodb://$(MONGO_INITDB_ROOT_USERNAME):$(MONGO_INITDB_ROOT_PASSWORD)"
            f"@{host}:{port['port']}/?authSource=admin"
        ), workload["metadata"]["name"]
    assert users == 2, "the workers and the coordinator"


def test_network_policy_lets_only_strix_pods_reach_mongo() -> None:
    policy, mongo = one("NetworkPolicy"), one("StatefulSet")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert matches(policy["spec"]["podSelector"]["matchLabels"], pod_labels(mongo))
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}, "same namespace, selected pods only"
    allowed = source["podSelector"]["matchLabels"]
    assert allowed == {"app.kubernetes.io/part-of": "strix"}
    assert rule["ports"] == [{"protocol": "TCP", "port": 27017}]
    for workload in workloads():
        assert matches(allowed, pod_labels(workload)), workload["metadata"]["name"]
    assert not matches(allowed, {"app": "anything-else"})


def test_workers_request_one_gpu_each_and_pack_light_trials() -> None:
    deployment = one("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1
    capacity = env_of(container)[defaults.ENV_GPU_CAPACITY]["value"]
    assert int(capacity) >= 1
    assert "$STRIX_GPU_CAPACITY" in container["args"][0], "one worker per capacity unit"


def test_the_lease_host_comes_from_the_node_name() -> None:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    host = env[defaults.ENV_HOST]["value"]
    refs = REFERENCE.findall(host)
    fields = {r: env[r]["valueFrom"]["fieldRef"]["fieldPath"] for r in refs}
    assert fields == {"NODE_NAME": "spec.nodeName", "POD_NAME": "metadata.name"}, fields
    assert host.startswith("$(NODE_NAME)"), "grouped by node in results and leases"


def test_grace_period_fits_the_requeue_on_sigterm() -> None:
    spec = one("Deployment")["spec"]["template"]["spec"]
    grace = spec["terminationGracePeriodSeconds"]
    stop = compose()["services"]["worker"]["stop_grace_period"]
    assert f"{grace}s" == stop, "the same budget as compose's stop_grace_period"
    # the requeue write is retried for up to GRACE_FACTOR heartbeats through an outage
    assert grace >= defaults.GRACE_FACTOR * defaults.HEARTBEAT_S + 15
    assert one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_jobs_prepare_the_size_the_study_uses() -> None:
    prepare, coordinator = one("Job", "prepare"), one("Job", "coordinator")
    (p,) = prepare["spec"]["template"]["spec"]["containers"]
    (c,) = coordinator["spec"]["template"]["spec"]["containers"]
    size = p["args"][p["args"].index("--size") + 1]
    assert c["args"][c["args"].index("--image-size") + 1] == size
    for container in (p, next(c for w, c in containers() if w["kind"] == "Deployment")):
        env = env_of(container)
        assert env[defaults.ENV_CACHE_DIR]["value"] == "/cache"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "/cache" in mounts
    claim = one("PersistentVolumeClaim")["metadata"]["name"]
    for workload in (prepare, one("Deployment")):
        (volume,) = workload["spec"]["template"]["spec"]["volumes"]
        assert volume["persistentVolumeClaim"]["claimName"] == claim
    assert coordinator["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


# --- the worker pod's supervisor script ---------------------------------------------------

FAKE_WORKER = """#!/usr/bin/env bash
# Stands in for strix-worker: on SIGTERM it "requeues" and exits 0, like the real one.
# With FAKE_EXIT, the first one to start exits on its own with that code.
echo $$ > "$FAKE_DIR/started.$$"
trap 'echo requeued > "$FAKE_DIR/stopped.$$"; exit 0' TERM
if [ -n "${FAKE_EXIT:-}" ] && mkdir "$FAKE_DIR/exit-once" 2>/dev/null; then
  sleep 0.5
  exit "$FAKE_EXIT"
fi
while :; do sleep 0.05; done
"""


def start_supervisor(tmp_path: Path, capacity: int, fake_exit: str = "") -> subprocess.Popen:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "strix-worker"
    fake.write_text(FAKE_WORKER, encoding="utf-8")
    fake.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STRIX_GPU_CAPACITY": str(capacity),
        "FAKE_DIR": str(tmp_path),
        "FAKE_EXIT": fake_exit,
    }
    return subprocess.Popen([*container["command"], container["args"][0]], env=env)


def stop_all(proc: subprocess.Popen, fake_dir: Path) -> None:
    """Whatever happened, leave no supervisor and no fake worker running."""
    proc.kill()
    proc.wait(timeout=10)
    for started in fake_dir.glob("started.*"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(started.read_text(encoding="utf-8")), signal.SIGKILL)


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_worker_pod_starts_capacity_workers_and_passes_sigterm_to_each(tmp_path: Path) -> None:
    proc = start_supervisor(tmp_path, capacity=3)
    try:
        wait_for(lambda: len(list(tmp_path.glob("started.*"))) == 3)
        time.sleep(0.3)
        assert len(list(tmp_path.glob("started.*"))) == 3, "exactly STRIX_GPU_CAPACITY workers"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        stop_all(proc, tmp_path)
    assert len(list(tmp_path.glob("stopped.*"))) == 3, "every worker must get the SIGTERM"


def test_worker_pod_ends_when_one_worker_dies(tmp_path: Path) -> None:
    proc = start_supervisor(tmp_path, capacity=2, fake_exit="3")
    try:
        assert proc.wait(timeout=20) == 3, "the container restarts with the worker's code"
    finally:
        stop_all(proc, tmp_path)
    assert len(list(tmp_path.glob("stopped.*"))) == 1, "the surviving worker was stopped"
