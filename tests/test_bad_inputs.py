"""Every row of docs/bad-inputs.md: a bad input and the exact error Strix answers with.

The CLIs run as real subprocesses (``python -m coordinator.launch``, ``python -m worker``,
``python -m shared.data prepare``); the trial-level rows run the real objective on real
Fashion-MNIST slices; the job-document rows put broken jobs in a real MongoDB and run a
real worker over them. Each message must say what was received, what was expected and how
to fix it, and must never carry a password.
"""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from shared import __version__
from shared.store.embedded import free_port
from tests.helpers import ROOT

FIX = (
    "fix: pass --data-dir DIR with the four idx files (.gz or uncompressed), set "
    "STRIX_DATA_DIR, or `apt-get install dataset-fashion-mnist`"
)
STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _cli(*argv: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {**os.environ, "STRIX_HOME": "/nonexistent-strix-home", **(env or {})}
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env=full,
        cwd=ROOT,
        timeout=timeout,
    )


def _error_line(res: subprocess.CompletedProcess) -> str:
    lines = [x for x in res.stderr.splitlines() if "error:" in x]
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert lines, res.stderr[-2000:]
    return lines[-1]


# --- coordinator.launch -------------------------------------------------------------------------

LAUNCH = {
    "unknown-model": (
        ["--model", "nope"],
        "strix launch: error: unknown model 'nope'; choose one of: acosta, baseline, convstrix, "
        "mobilenet, mobilenet_lite, simplecnn, vggstrix",
    ),
    "max-evals-zero": (
        ["--max-evals", "0"],
        "strix launch: error: --max-evals must be a positive integer, got 0; e.g. --max-evals 50",
    ),
    "image-too-small": (
        ["--model", "vggstrix", "--image-size", "16"],
        "strix launch: error: --image-size 16 is too small for vggstrix; it needs at least 32",
    ),
    "gpu-capacity-zero": (
        ["--gpu-capacity", "0", "--local-workers", "1"],
        "strix launch: error: --gpu-capacity must be >= 1 light trial per GPU, got 0; e.g. "
        "--gpu-capacity 4 on a 40 GB GPU",
    ),
    # data settings are checked before any server is reached or started
    "limit-too-small": (
        ["--limit", "5"],
        "strix launch: error: limit must be an integer in [20, 60000], got 5",
    ),
    "interpolation": (
        ["--interpolation", "bogus"],
        "strix launch: error: interpolation must be one of ['area', 'cubic', 'linear', 'nearest'], "
        "got 'bogus'",
    ),
}


@pytest.mark.slow
def test_launch_rejects_an_unknown_model_as_a_process() -> None:
    """The whole process: exit code 2 and one line (it imports TensorFlow first: slow)."""
    argv, expected = LAUNCH["unknown-model"]
    res = _cli("-m", "coordinator.launch", "--mongo", "mongodb://127.0.0.1:1", *argv)
    assert _error_line(res) == expected
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("key", sorted(LAUNCH))
def test_launch_rejects(key: str, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    """The same entry point in this process (TensorFlow is loaded once for the suite)."""
    from coordinator.launch import main

    monkeypatch.setenv("STRIX_HOME", "/nonexistent-strix-home")
    argv, expected = LAUNCH[key]
    assert main(["--mongo", "mongodb://127.0.0.1:1", *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == expected


@pytest.mark.slow
def test_launch_stops_when_a_local_worker_refuses_to_start(
    mongo_url: str, db_name: str, data_dir: Path, tmp_path: Path
) -> None:
    """A worker's configuration error ends the study at once instead of a restart loop."""
    env = {
        "STRIX_FAKE_GPUS": "two",  # a worker-only setting: launch itself has no use for it
        "STRIX_HOME": str(tmp_path),
        "STRIX_CACHE_DIR": str(tmp_path),
    }
    res = _cli(
        "-m",
        "coordinator.launch",
        "--mongo",
        mongo_url,
        "--db",
        db_name,
        "--model",
        "baseline",
        "--image-size",
        "28",
        "--limit",
        "100",
        "--max-evals",
        "1",
        "--local-workers",
        "1",
        "--data-dir",
        str(data_dir),
        "--no-progress",
        env=env,
        timeout=300,
    )
    assert _error_line(res) == (
        "strix launch: error: local worker 0 refused to start: strix-worker: error: "
        "STRIX_FAKE_GPUS='two' must be a GPU count, e.g. 2"
    )


def test_launch_rejects_a_non_integer_max_evals() -> None:
    res = _cli("-m", "coordinator.launch", "--max-evals", "ten")
    assert _error_line(res) == (
        "strix launch: error: argument --max-evals: invalid int value: 'ten'; see strix launch "
        "--help"
    )


# --- worker flags and environment ------------------------------------------------------------

WORKER = {
    "gpu-capacity-zero": (
        ["--gpu-capacity", "0"],
        {},
        "strix-worker: error: --gpu-capacity must be >= 1 light trial per GPU, "
        "got 0; e.g. --gpu-capacity 4 on a 40 GB GPU",
    ),
    "gpu-capacity-env": (
        [],
        {"STRIX_GPU_CAPACITY": "four"},
        "strix-worker: error: STRIX_GPU_CAPACITY must be an integer, got 'four'",
    ),
    "heartbeat-zero": (
        ["--heartbeat", "0"],
        {},
        "strix-worker: error: --heartbeat must be > 0, got 0.0; pass a positive number or omit "
        "the flag for the default",
    ),
    "grace-below-heartbeat": (
        ["--heartbeat", "5", "--grace", "2"],
        {},
        "strix-worker: error: --grace (2.0s) must exceed --heartbeat (5.0s)",
    ),
    "fake-gpus": (
        [],
        {"STRIX_FAKE_GPUS": "two"},
        "strix-worker: error: STRIX_FAKE_GPUS='two' must be a GPU count, e.g. 2",
    ),
    "forced-gpu": (
        [],
        {"STRIX_FAKE_GPUS": "2", "STRIX_GPU": "5"},
        "strix-worker: error: STRIX_GPU='5' but this host's GPUs are [0, 1]; unset "
        "STRIX_GPU or pick one of them",
    ),
    "workdir": (
        ["--workdir", "/etc/hostname/sub"],
        {},
        "strix-worker: error: --workdir /etc/hostname/sub is not writable (Not a "
        "directory); pick a directory this user can write, or omit --workdir",
    ),
    "malformed-uri": (
        ["--mongo", "localhost:27017"],
        {},
        "strix-worker: error: malformed --mongo 'localhost:27017': expected hyperopt's "
        "host[:port]/db (e.g. localhost:27017/strix), or a mongodb://[user:pass@]host[:port][/db] "
        "URI",
    ),
    "bad-port": (
        ["--mongo", "mongodb://127.0.0.1:99999"],
        {},
        "strix-worker: error: malformed MongoDB URI 'mongodb://127.0.0.1:99999': Port "
        "must be an integer between 0 and 65535",
    ),
}


@pytest.mark.parametrize("key", sorted(WORKER))
def test_worker_rejects(key: str) -> None:
    argv, env, expected = WORKER[key]
    res = _cli("-m", "worker", *argv, env={"STRIX_MONGO": "mongodb://127.0.0.1:1", **env})
    assert _error_line(res) == expected
    assert "Traceback" not in res.stderr


def test_unreachable_server_is_one_line() -> None:
    port = free_port()
    res = _cli("-m", "worker", "--mongo", f"mongodb://127.0.0.1:{port}")
    assert _error_line(res) == (
        f"strix-worker: error: cannot reach MongoDB at mongodb://127.0.0.1:{port} (db strix): "
        f"127.0.0.1:{port}: [Errno 111] Connection refused. Is the server running and the "
        "host/port right, and does this machine reach it?"
    )


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "strix"
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    query = parts.query or "authSource=admin"
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path or "/", query, ""))


def test_wrong_password_is_refused_and_redacted(mongo_url: str) -> None:
    url = _with_password(mongo_url, "example-wrong-pw")
    res = _cli("-m", "worker", "--mongo", url)
    line = _error_line(res)
    shown = url.replace("example-wrong-pw", "***")
    if os.environ.get("MONGO_URL"):  # a real mongod: the real authentication error
        assert line.startswith(f"strix-worker: error: MongoDB at {shown} (db strix) refused the ")
        assert line.endswith("check the user, password and authSource in the URI")
    else:  # nx-27017 has no authentication at all
        assert line == (
            f"strix-worker: error: MongoDB at {shown} (db strix) does not support authentication "
            "(the embedded nx-27017 has none); remove user:password from the URI for it"
        )
    assert "example-wrong-pw" not in res.stderr + res.stdout


@pytest.mark.parametrize(
    "query, error",
    [
        ("proxyPassword=example-proxy-pw", "malformed MongoDB URI 'mongodb://"),
        ("tlsCertificateKeyFilePassword=example-key-pw", "cannot reach MongoDB at mongodb://"),
    ],
)
def test_a_secret_query_option_is_never_shown(mongo_url: str, query: str, error: str) -> None:
    """Where the worker names its store (the start line, every error): no secret option."""
    res = _cli("-m", "worker", "--mongo", f"{mongo_url}/?{query}", "--reserve-timeout", "0.5")
    assert error in _error_line(res)
    assert query.split("=")[1] not in res.stderr + res.stdout, res.stderr[-2000:]


# --- the dataset -------------------------------------------------------------------------------


def _data_copy(src: Path, dst: Path, skip: str = "") -> Path:
    dst.mkdir()
    for stem in STEMS:
        if stem != skip:
            (dst / f"{stem}.gz").symlink_to(src / f"{stem}.gz")
    return dst


def _prepare(data: Path, cache: Path) -> str:
    res = _cli(
        "-m",
        "shared.data",
        "prepare",
        "--size",
        "28",
        "--data-dir",
        str(data),
        "--cache-dir",
        str(cache),
    )
    return _error_line(res)


def test_missing_dataset_file(data_dir: Path, tmp_path: Path) -> None:
    d = _data_copy(data_dir, tmp_path / "d", skip="t10k-labels-idx1-ubyte")
    assert _prepare(d, tmp_path / "c") == (
        f"strix prepare: error: data directory {d} lacks t10k-labels-idx1-ubyte[.gz]; {FIX}"
    )


def test_missing_data_directory(tmp_path: Path) -> None:
    d = tmp_path / "nowhere"
    assert _prepare(d, tmp_path / "c") == (
        f"strix prepare: error: data directory {d} does not exist; {FIX}"
    )


def test_truncated_gzip_file(data_dir: Path, tmp_path: Path) -> None:
    d = _data_copy(data_dir, tmp_path / "d", skip="t10k-labels-idx1-ubyte")
    blob = (data_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    assert _prepare(d, tmp_path / "c") == (
        "strix prepare: error: "
        f"{d}/t10k-labels-idx1-ubyte.gz is not a readable gzip file (Compressed file "
        "ended before the end-of-stream marker was reached); expected an intact Fashion-MNIST "
        f"file: re-download it; {FIX}"
    )


def test_truncated_idx_file(data_dir: Path, tmp_path: Path) -> None:
    d = _data_copy(data_dir, tmp_path / "d", skip="t10k-labels-idx1-ubyte")
    raw = gzip.decompress((data_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (d / "t10k-labels-idx1-ubyte").write_bytes(raw[: 8 + 5000])
    assert _prepare(d, tmp_path / "c") == (
        "strix prepare: error: "
        f"{d}/t10k-labels-idx1-ubyte: expected 10000 data bytes after the header, found "
        f"5000; the file is corrupt or not t10k-labels-idx1-ubyte; {FIX}"
    )


def test_corrupt_idx_magic(data_dir: Path, tmp_path: Path) -> None:
    d = _data_copy(data_dir, tmp_path / "d", skip="t10k-labels-idx1-ubyte")
    raw = gzip.decompress((data_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (d / "t10k-labels-idx1-ubyte").write_bytes((2051).to_bytes(4, "big") + raw[4:])
    assert _prepare(d, tmp_path / "c") == (
        "strix prepare: error: "
        f"{d}/t10k-labels-idx1-ubyte: expected magic number 2049, found 2051; the file "
        f"is corrupt or not t10k-labels-idx1-ubyte; {FIX}"
    )


def test_corrupt_gzip_file(data_dir: Path, tmp_path: Path) -> None:
    d = _data_copy(data_dir, tmp_path / "d", skip="t10k-labels-idx1-ubyte")
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"<html>not found</html>")
    assert _prepare(d, tmp_path / "c") == (
        "strix prepare: error: "
        f"{d}/t10k-labels-idx1-ubyte.gz is not a readable gzip file (Not a gzipped file "
        f"(b'<h')); expected an intact Fashion-MNIST file: re-download it; {FIX}"
    )


def test_cache_dir_not_writable(data_dir: Path) -> None:
    line = _prepare(data_dir, Path("/etc/hostname/cache"))
    assert line == (
        "strix prepare: error: "
        "cannot create cache directory /etc/hostname/cache ([Errno 20] Not a directory: "
        "'/etc/hostname/cache'); pass --cache-dir or set STRIX_CACHE_DIR to a writable place"
    )


# --- trial-level failures: the objective returns status "fail", the study goes on ---------------


@pytest.fixture(scope="module")
def small_data(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from shared.data.cache import load
    from shared.data.spec import DataSpec

    cache = tmp_path_factory.mktemp("cache")
    return load(DataSpec(image_size=28, limit=100), data_dir=data_dir, cache_dir=cache), cache


SMALL = {
    "num_blocks": 2,
    "block_size": 1,
    "fcl_num_layers": 1,
    "fcl_layer_size": 32,
    "fcl_dropout_rate": 0.1,
    "activation": "relu",
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 32,
}


def test_num_blocks_too_deep_fails_the_trial(small_data, data_dir, monkeypatch) -> None:
    from shared.training.jobs import objective

    _, cache = small_data
    monkeypatch.setenv("STRIX_DATA_DIR", str(data_dir))
    monkeypatch.setenv("STRIX_CACHE_DIR", str(cache))
    config = {
        "model": "convstrix",
        "params": {**SMALL, "num_blocks": 6},
        "data": {"image_size": 28, "limit": 100},
        "budget": {"max_epochs": 1, "patience": 1},
        "seed": 0,
        "weights": None,
        "strix_version": __version__,
    }
    result = objective(config)
    assert result["status"] == "fail" and result["loss"] is None
    assert result["reason"] == (
        "model cannot be built: num_blocks=6 pools a 28x28 image below 1x1; for 28 px use "
        "num_blocks in 1..5 (or a larger --image-size)"
    )


def test_nan_loss_fails_the_trial(small_data) -> None:
    from shared.training.loop import Budget, run_trial

    params = {**SMALL, "optimizer": "sgd", "learning_rate": 1e4, "activation": "selu"}
    result = run_trial("convstrix", params, data=small_data[0], budget=Budget(1, 1), seed=0)
    assert result["status"] == "fail" and result["loss"] is None
    assert result["reason"] == (
        "training diverged: loss became NaN or inf in epoch 1; try a lower learning_rate "
        "(was 10000.0)"
    )


def test_out_of_memory_fails_the_trial_as_oom(small_data) -> None:
    """A real allocation failure: a 5 TB dense kernel, refused at once by the allocator."""
    from shared.training.loop import Budget, run_trial

    params = {**SMALL, "fcl_layer_size": 10**8}
    result = run_trial("convstrix", params, data=small_data[0], budget=Budget(1, 1), seed=0)
    assert result["status"] == "fail" and result["reason"] == "oom"
    assert "OOM when allocating tensor" in result["detail"]


# --- broken job documents: the worker marks each ERROR and carries on --------------------------


def _domain(space: dict, fn: object = None) -> bytes:
    import cloudpickle
    from hyperopt import base

    from shared.training.jobs import toy_objective

    return cloudpickle.dumps(base.Domain(fn or toy_objective, space))


@pytest.fixture(scope="module")
def broken_jobs(mongo_server: str, tmp_path_factory: pytest.TempPathFactory):
    """Studies with one broken part each and a good one last; one worker runs them all."""
    from shared.store import connect
    from shared.training.jobs import toy_space
    from tests.helpers import insert_toy_jobs

    db = f"strix_test_bad_{os.getpid()}"
    store = connect(mongo_server, db)
    old = toy_space(0.0)
    old["strix_version"] = "0.0.1"
    roots = tmp_path_factory.mktemp("roots")
    (roots / "work").mkdir()
    (roots / "weights").mkdir()
    (roots / "work" / "escape").symlink_to(roots)  # a link inside the work dir leads out
    tb_out, tb_link = toy_space(0.0), toy_space(0.0)
    tb_out["tb_dir"] = str(roots / "evil")
    tb_link["tb_dir"] = str(roots / "work" / "escape" / "evil")
    weights_out = toy_space(0.0)
    weights_out["weights"] = str(roots / "work" / ".." / "stolen.h5")
    attachments = {
        "nodomain": None,
        "badpickle": b"not a pickle",
        "foreign": _domain(toy_space(0.0), os.system),
        "oldversion": _domain(old),
        "garbled": _domain(toy_space(0.0)),
        "nomisc": _domain(toy_space(0.0)),
        "tbdir": _domain(tb_out),
        "tblink": _domain(tb_link),
        "weights": _domain(weights_out),
        "good": _domain(toy_space(0.0)),
    }
    for key, blob in attachments.items():
        if blob is not None:
            store.trials(key, refresh=False).attachments["FMinIter_Domain"] = blob
        if key == "garbled":
            _insert_garbled(store)
        elif key == "nomisc":
            tid = store.trials(key, refresh=False).new_trial_ids(1)[0]
            store.handle.insert(
                {
                    "tid": tid,
                    "exp_key": key,
                    "state": 0,
                    "owner": None,
                    "version": 0,
                    "resource": "light",
                }
            )
        else:
            insert_toy_jobs(store, key, 1)
    log = tmp_path_factory.mktemp("w") / "worker.log"
    res = _cli(
        "-m",
        "worker",
        "--mongo",
        mongo_server,
        "--db",
        db,
        "--reserve-timeout",
        "3",
        "--max-consecutive-failures",
        "50",
        "--heartbeat",
        "1",
        "--workdir",
        str(roots / "work"),
        "--weights-dir",
        str(roots / "weights"),
        timeout=180,
    )
    log.write_text(res.stderr)
    docs = {d["exp_key"]: d for d in store.trials_in(None)}
    assert not (roots / "evil").exists(), "a job document chose where the worker writes"
    yield res, docs, roots
    store.client.drop_database(db)
    store.close()


def _insert_garbled(store) -> None:
    trials = store.trials("garbled", refresh=False)
    tids = trials.new_trial_ids(1)
    misc = {
        "tid": tids[0],
        "cmd": ("domain_attachment", "FMinIter_Domain"),
        "workdir": None,
        "idxs": {"x": tids},
        "vals": {"x": "garbage"},
    }
    trials.insert_trial_docs(trials.new_trial_docs(tids, [None], [{"status": "new"}], [misc]))


JOB_ERRORS = {
    "nodomain": "study 'nodomain' has no FMinIter_Domain attachment",
    "badpickle": "the study's pickled Domain cannot be loaded: UnpicklingError(\"invalid load "
    "key, 'n'.\")",
    "foreign": "refusing to run code from posix.system: workers only run functions of the "
    "installed `shared` package; post the study with `python -m coordinator.launch`, or "
    "start the worker with --allow-module PKG to run an objective from a package installed "
    "on it",
    "oldversion": f"job posted by Strix 0.0.1, this worker runs {__version__}; run workers of "
    "the same version as the coordinator",
    "garbled": "trial spec cannot be evaluated: NotImplementedError: ('multiple values', ('x', "
    "'garbage'))",
    "nomisc": "trial spec cannot be evaluated: KeyError: 'misc'",
    "tbdir": "refusing the trial's tb_dir {roots}/evil/tbdir/trial-{tid}: a worker writes only "
    "under its --workdir {roots}/work; launch with a --tb-dir inside it, or start the worker "
    "with a --workdir that holds the study's --tb-dir",
    "tblink": "refusing the trial's tb_dir {roots}/evil/tblink/trial-{tid}: a worker writes only "
    "under its --workdir {roots}/work; launch with a --tb-dir inside it, or start the worker "
    "with a --workdir that holds the study's --tb-dir",
    "weights": "refusing the trial's weights {roots}/stolen.h5: a worker loads weight files "
    "only from its --weights-dir {roots}/weights; launch with --weights imagenet, none or a "
    "file in that directory",
}


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(JOB_ERRORS))
def test_broken_job_is_marked_error_with_a_reason(broken_jobs, key: str) -> None:
    res, docs, roots = broken_jobs
    doc = docs[key]
    reason = JOB_ERRORS[key].format(roots=os.path.realpath(roots), tid=doc.get("tid"))
    assert doc["state"] == 3, (doc, res.stderr[-3000:])
    assert doc["error"] == ["strix", reason]
    assert doc["result"] == {"status": "fail", "reason": reason}


@pytest.mark.slow
def test_worker_carries_on_after_broken_jobs(broken_jobs) -> None:
    res, docs, _ = broken_jobs
    assert res.returncode == 0, res.stderr[-3000:]
    assert docs["good"]["state"] == 2 and docs["good"]["result"]["status"] == "ok"
    assert "Traceback" not in res.stderr


def test_plain_pickle_with_foreign_code_is_refused() -> None:
    """The refusal is by module, so a plain-pickle Domain with foreign code is refused too."""
    from shared.domain import load_domain
    from shared.errors import JobError

    with pytest.raises(JobError, match=r"refusing to run code from posix\.system"):
        load_domain(pickle.dumps(os.system))
