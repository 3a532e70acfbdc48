"""strix cluster: the pure plan (GPU inventory + options -> containers) and the CLI.

No Docker engine is needed: planning is pure, and the engine-facing commands are run
against an address where no engine listens, which must end in one line and exit 2.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import pytest

from coordinator import cluster, cluster_plan
from coordinator.cluster_plan import ClusterOptions, plan_cluster
from shared.config import defaults
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_PW = "Tr0ub4dor/&3:x@y"  # URI-hostile on purpose: must be percent-encoded
NO_ENGINE = "unix:///nonexistent/strix-test/docker.sock"
ENV_NAMES = {v for k, v in vars(defaults).items() if k.startswith("ENV_")}


def options(**kw: object) -> ClusterOptions:
    base: dict[str, object] = {"mongo_password": SAMPLE_PW, "host_name": "gpubox"}
    return ClusterOptions(**{**base, **kw})  # type: ignore[arg-type]


def test_light_packs_n_workers_per_gpu_each_with_its_own_device() -> None:
    plan = plan_cluster([0, 1, 2, 3], options(gpus=(1, 3), light_per_gpu=3))
    assert len(plan.workers) == 6
    assert Counter(w.gpu_ids for w in plan.workers) == {("1",): 3, ("3",): 3}
    names = [c.name for c in plan.containers]
    assert len(set(names)) == len(names) == 7
    assert plan.mongo.name == "strix-mongo" and not plan.mongo.gpu_ids
    for w in plan.workers:
        (gpu,) = w.gpu_ids
        assert w.env[defaults.ENV_GPU_CAPACITY] == "3"
        assert w.env[defaults.ENV_HOST] == f"gpubox-gpu{gpu}"
        assert w.labels[cluster_plan.LABEL_GPU] == gpu
        assert w.labels[cluster_plan.LABEL_CLUSTER] == "strix"


def test_inside_a_container_the_pinned_gpu_is_device_zero() -> None:
    """A one-GPU device request renumbers that GPU to 0, so STRIX_GPU must say 0."""
    for w in plan_cluster([0, 1], options(light_per_gpu=2)).workers:
        assert w.env[defaults.ENV_GPU] == "0"
        assert w.env[defaults.ENV_GPUS] == "0"


def test_heavy_runs_one_worker_per_gpu_owning_the_whole_gpu() -> None:
    plan = plan_cluster([0, 1, 2], options(heavy=True))
    assert [w.gpu_ids for w in plan.workers] == [("0",), ("1",), ("2",)]
    assert {w.env[defaults.ENV_GPU_CAPACITY] for w in plan.workers} == {"1"}


def test_default_gpus_are_the_whole_inventory() -> None:
    plan = plan_cluster([0, 1], options(light_per_gpu=1))
    assert sorted(w.gpu_ids for w in plan.workers) == [("0",), ("1",)]


def test_worker_env_carries_the_password_and_only_known_strix_variables() -> None:
    plan = plan_cluster([0], options(data_dir="/srv/fashion-mnist"))
    for w in plan.workers:
        uri = urlsplit(w.env[defaults.ENV_MONGO])
        assert unquote(uri.password or "") == SAMPLE_PW
        assert uri.username == "strix" and uri.hostname == "strix-mongo"
        assert "authSource=admin" in uri.query
        strix = {k for k in w.env if k.startswith("STRIX_")}
        assert strix <= ENV_NAMES, strix - ENV_NAMES
        assert ("/srv/fashion-mnist", cluster_plan.DATA_MOUNT, "ro") in w.volumes
    assert plan.mongo.env["MONGO_INITDB_ROOT_PASSWORD"] == SAMPLE_PW


def test_printing_a_plan_never_shows_the_password() -> None:
    opts = options(gpus=(0,), light_per_gpu=2)
    plan = plan_cluster([], opts)
    for text in (repr(plan), str(plan), plan.describe(), repr(opts), *map(str, plan.containers)):
        assert SAMPLE_PW not in text
        assert "Tr0ub4dor" not in text
    assert "***" in plan.describe()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a,b", "'a,b'"),
        ("0,x", "x"),
        ("", "empty"),
        ("0,,1", "empty"),
        ("-1", "-1"),
        ("1,1", "twice"),
    ],
)
def test_bad_gpu_lists_are_refused_with_the_input_quoted(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="--gpus") as err:
        cluster_plan.parse_gpus(text)
    assert fragment in str(err.value)


def test_good_gpu_list() -> None:
    assert cluster_plan.parse_gpus(" 2, 0 ") == (2, 0)


@pytest.mark.parametrize(
    ("kw", "inventory", "fragment"),
    [
        ({"light_per_gpu": 0}, [0], "--light-per-gpu 0"),
        ({"light_per_gpu": -2}, [0], "--light-per-gpu -2"),
        ({"light_per_gpu": 1000}, [0], "--light-per-gpu 1000"),
        ({"gpus": (5,)}, [0, 1], "[5]"),
        ({}, [], "no GPUs found"),
        ({"mongo_password": ""}, [0], "MONGO_ROOT_PASSWORD"),
        ({"project": "bad name"}, [0], "--project"),
        ({"network": "a/b"}, [0], "--network"),
        ({"image": ""}, [0], "--image"),
        ({"data_dir": "relative/dir"}, [0], "absolute"),
    ],
)
def test_bad_options_raise_config_error(kw: dict, inventory: list[int], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        plan_cluster(inventory, options(**kw))
    assert fragment in str(err.value)
    assert SAMPLE_PW not in str(err.value)


def test_heavy_ignores_the_light_count() -> None:
    assert len(plan_cluster([0], options(heavy=True, light_per_gpu=0)).workers) == 1


def test_run_kwargs_request_exactly_the_planned_gpu() -> None:
    plan = plan_cluster([0, 1], options(light_per_gpu=1, network="strixnet"))
    for w in plan.workers:
        kw = cluster.run_kwargs(w, plan.network)
        (request,) = kw["device_requests"]
        assert request["DeviceIDs"] == list(w.gpu_ids)
        assert request["Capabilities"] == [["gpu"]]
        assert request["Driver"] == "nvidia"
        assert kw["network"] == "strixnet" and kw["name"] == w.name
        assert kw["environment"] == dict(w.env)
        assert kw["volumes"]["strix-cache"] == {"bind": "/cache", "mode": "rw"}
    mongo = cluster.run_kwargs(plan.mongo, plan.network)
    assert "device_requests" not in mongo
    assert mongo["healthcheck"]["Test"][:2] == ["CMD", "mongosh"]
    assert mongo["volumes"]["strix-mongo-data"]["bind"] == "/data/db"


def test_env_file_is_read_like_compose(tmp_path: Path) -> None:
    env = tmp_path / "cluster.env"
    env.write_text(f"# comment\nexport MONGO_ROOT_USER=alice\nMONGO_ROOT_PASSWORD='{SAMPLE_PW}'\n")
    assert cluster.read_env_file(str(env)) == {
        "MONGO_ROOT_USER": "alice",
        "MONGO_ROOT_PASSWORD": SAMPLE_PW,
    }
    with pytest.raises(ConfigError, match="--env-file"):
        cluster.read_env_file(str(tmp_path / "missing.env"))


# --- the command line -----------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": NO_ENGINE, "HOME": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cluster", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**base, **(env or {})},
        timeout=120,
    )


def test_status_without_an_engine_is_one_line_and_exit_2() -> None:
    done = run_cli("status")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("strix cluster: error: no Docker engine answers"), lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_cli_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """down/up also need the engine; --dry-run does not, and never prints the password."""
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.setenv("MONGO_ROOT_PASSWORD", SAMPLE_PW)
    monkeypatch.setenv(defaults.ENV_GPUS, "0,1")
    monkeypatch.delenv(defaults.ENV_FAKE_GPUS, raising=False)
    assert cluster.main(["down"]) == 2
    assert cluster.main(["up", "--heavy"]) == 2
    assert "no Docker engine" in capsys.readouterr().err
    assert cluster.main(["up", "--light-per-gpu", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("strix-worker-gpu") == 4 and SAMPLE_PW not in out
    assert cluster.main(["up", "--gpus", "a,b", "--dry-run"]) == 2
    assert cluster.main(["up", "--light-per-gpu", "0", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "'a,b'" in err[0] and "--light-per-gpu 0" in err[1]
    assert all(line.startswith("strix cluster: error: --") for line in err), err


def test_an_engine_that_refuses_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Reached but refusing (an APIError): exit 1, not 2, and no traceback."""
    from docker.errors import APIError

    def refuse(**kw: object) -> list:
        raise APIError("500 Server Error: permission denied\nsecond line")

    client = SimpleNamespace(containers=SimpleNamespace(list=refuse))
    monkeypatch.setattr(cluster, "connect", lambda: client)
    assert cluster.main(["status"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["strix cluster: error: Docker refused: 500 Server Error: permission denied"]


def test_env_file_password_is_used_but_not_printed(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f"MONGO_ROOT_USER=bob\nMONGO_ROOT_PASSWORD={SAMPLE_PW}\n")
    done = run_cli("up", "--gpus", "0", "--env-file", str(env), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "mongodb://bob:***@strix-mongo" in done.stdout
    assert SAMPLE_PW not in done.stdout + done.stderr


def test_help_ends_with_examples() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    tail = done.stdout.strip().splitlines()[-1]
    assert tail.strip().startswith("python -m coordinator.cluster")
    assert "examples:" in done.stdout
