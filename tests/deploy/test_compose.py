"""The compose smoke test: scripts/compose-smoke.sh builds Dockerfile.worker and runs a real
study through docker-compose.yml with tests/compose/smoke.yml on top.

The slow test runs the script itself: it passes only when the script ran the study to the
end, and skips only on the script's own SKIPPED line (no Docker engine could be started).
The fast tests keep the override honest (it changes only what the CI machine cannot do)
and drive the script with a fake ``docker`` to check its skip and failure paths.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import defaults

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compose-smoke.sh"
OVERRIDE = ROOT / "tests" / "compose" / "smoke.yml"
COMPOSE = ROOT / "docker-compose.yml"
SKIP_EXIT = 77
SKIP_PREFIX = "compose-smoke: SKIPPED: "
LIMIT_S = 900  # the script's own budget; a cold run takes about 4 minutes here


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- the smoke test itself --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(LIMIT_S + 180)
def test_compose_smoke_runs_a_study_through_the_real_compose_file() -> None:
    proc = subprocess.Popen(
        ["bash", str(SCRIPT)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # its EXIT trap takes the compose project down
        out, err = proc.communicate(timeout=150)
        pytest.fail(f"compose-smoke.sh ran over {LIMIT_S}s:\n{(out + err)[-6000:]}")
    if proc.returncode == SKIP_EXIT:
        skipped = [line for line in out.splitlines() if line.startswith(SKIP_PREFIX)]
        assert len(skipped) == 1, f"exit {SKIP_EXIT} without one SKIPPED line:\n{out}{err}"
        pytest.skip(skipped[0])
    assert proc.returncode == 0, (
        f"compose-smoke.sh exited {proc.returncode}:\n{(out + err)[-8000:]}"
    )
    passed = [line for line in err.splitlines() if line.startswith("compose-smoke: PASSED")]
    assert passed, f"exit 0 without the PASSED line:\n{err[-4000:]}"
    print("\n".join(line for line in err.splitlines() if line.startswith("compose-smoke: ")))


# --- the override changes only what this machine cannot do ---------------------------


def test_override_changes_only_networking_the_mongo_stand_in_and_the_mongo_uri() -> None:
    base, override = load(COMPOSE)["services"], load(OVERRIDE)["services"]
    assert set(override) == set(base), "every service needs host networking, and no new one"
    allowed_mongo = {"image", "pull_policy", "network_mode", "user", "entrypoint", "healthcheck"}
    for name, svc in override.items():
        assert svc["network_mode"] == "host", name
        keys = set(svc) - {"network_mode"}
        if name == "mongo":
            assert keys <= allowed_mongo, f"mongo stand-in changes {keys - allowed_mongo}"
            continue
        assert keys <= {"build", "environment"}, f"{name} changes {keys - {'build', 'environment'}}"
        if "build" in svc:
            assert "build" in base[name] and svc["build"] == {"network": "host"}, name
        env = svc.get("environment", {})
        assert set(env) <= {defaults.ENV_MONGO}, f"{name} changes {set(env)}"
        if env:
            assert "@" not in env[defaults.ENV_MONGO], "nx-27017 has no auth: no credentials"
            assert env[defaults.ENV_MONGO].startswith("mongodb://127.0.0.1:${SMOKE_MONGO_PORT")


def test_the_mongo_stand_in_is_nx_27017_from_the_strix_cpu_image() -> None:
    mongo, cpu = load(OVERRIDE)["services"]["mongo"], load(COMPOSE)["services"]["worker-cpu"]
    assert mongo["image"].split(":")[0] == cpu["image"].split(":")[0] == "strix-cpu"
    assert mongo["pull_policy"] == "never", "the stand-in is built here, never pulled"
    assert mongo["entrypoint"][:3] == ["python", "-m", "nx_27017.nx_27017"]
    assert "/data/db" in mongo["entrypoint"], "its data lives in the real mongo-data volume"
    assert "pymongo" in " ".join(mongo["healthcheck"]["test"])
    # the module really is in the image's dependencies
    import nx_27017.nx_27017  # noqa: F401


def test_the_script_runs_the_real_compose_file_with_the_override_only() -> None:
    text = SCRIPT.read_text(encoding="utf-8")
    assert '-f "$ROOT/docker-compose.yml" -f "$ROOT/tests/compose/smoke.yml"' in text
    assert "--scale worker-cpu=2" in text and "--scale worker-cpu=1" in text
    for flag in ("--size 28", "--max-evals 3", "--limit 1000", "--max-epochs 1"):
        assert flag in text, flag
    assert "--entrypoint strix-results" in text and "--format json" in text
    assert "down -v" in text and "trap cleanup EXIT" in text


# --- the script's skip and failure paths, with a fake docker -------------------------

FAKE_DOCKER = """#!/usr/bin/env bash
# A stand-in for the docker CLI: records every call, answers per $FAKE_MODE.
printf '%s\\n' "$*" >> "$FAKE_LOG"
case "$FAKE_MODE:$*" in
  down:*) exit 1 ;;
  up:info | up:"compose version") exit 0 ;;
  up:compose*" build "*) echo "fake build error" >&2; exit 1 ;;
  up:*) exit 0 ;;
esac
exit 1
"""


def fake_checkout(tmp_path: Path, mode: str, engine_tool: str | None) -> tuple[Path, dict]:
    """A copy of the script in a bare checkout, with a fake docker first on PATH."""
    (tmp_path / "main" / "scripts").mkdir(parents=True)
    script = tmp_path / "main" / "scripts" / "compose-smoke.sh"
    script.write_text(SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
    if engine_tool is not None:
        tool = tmp_path / "shared" / "tools" / "docker-engine.sh"
        tool.parent.mkdir(parents=True)
        tool.write_text(engine_tool, encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER, encoding="utf-8")
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train-labels-idx1-ubyte.gz").write_bytes(b"")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
        "FAKE_MODE": mode,
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "STRIX_DATA_DIR": str(data),
    }
    return script, env


def run_fake(script: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "engine_tool", [None, "#!/usr/bin/env bash\necho 'cannot start dockerd' >&2\nexit 1\n"]
)
def test_no_engine_prints_one_skipped_line_and_exits_77(
    tmp_path: Path, engine_tool: str | None
) -> None:
    script, env = fake_checkout(tmp_path, "down", engine_tool)
    done = run_fake(script, env)
    assert done.returncode == SKIP_EXIT, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(SKIP_PREFIX), done.stdout
    assert "Docker engine" in lines[0]
    calls = (tmp_path / "calls.log").read_text(encoding="utf-8")
    assert "compose --project-name" not in calls, "nothing may run when it skips"


def test_a_failing_step_fails_and_still_takes_its_own_project_down(tmp_path: Path) -> None:
    script, env = fake_checkout(tmp_path, "up", None)
    done = run_fake(script, env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "SKIPPED" not in done.stdout and "PASSED" not in done.stderr
    assert "FAILED: docker compose build worker-cpu" in done.stderr
    assert "fake build error" in done.stderr
    calls = (tmp_path / "calls.log").read_text(encoding="utf-8").splitlines()
    compose = [c for c in calls if c.startswith("compose ") and c != "compose version"]
    project = compose[0].split("--project-name ", 1)[1].split()[0]
    assert project.startswith("strix-smoke-") and len(project) > len("strix-smoke-")
    assert all(f"--project-name {project} " in c for c in compose), compose
    assert any(" down -v " in c for c in compose), "the EXIT trap must run down -v"
    label = f"label=com.docker.compose.project={project}"
    listings = [c for c in calls if " ls " in f" {c} "]
    assert listings and all(label in c for c in listings), listings
    assert f"image rm strix-cpu:smoke-{project.removeprefix('strix-smoke-')}" in calls
    secret = next(c for c in compose if "--env-file" in c).split("--env-file ", 1)[1].split()[0]
    assert not Path(secret).exists(), "the env file with the password must be deleted"
    assert "MONGO_ROOT_PASSWORD" not in done.stdout + done.stderr
