"""``strix dashboard``: the read-only Optuna storage, its HTTP API and a real browser.

Everything is real: the embedded MongoDB, worker processes, a Keras study posted by
``coordinator.launch``, the dashboard's HTTP server on 127.0.0.1 and headless Chromium.

* ``vgg``: a finished VGGStrix study (3 trials, 2 epochs, 200 images at 32 px, no ImageNet
  weights): params, distributions (the conditional ``conv`` choice), values and epochs.
* ``live``: toy trials run by one worker that keeps running: 3 ok, one more running and
  one queued, plus a study whose only trial cannot run (no Domain). New trials and epochs
  must show up while the server runs.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from coordinator.dashboard import make_server
from coordinator.optuna_bridge.storage import ReadOnlyStorageError, StrixStorage
from shared.config import defaults
from shared.store import Store, connect
from tests.helpers import ROOT, insert_toy_jobs, post_toy, start_worker, stop_all, wait_until

OUT = ROOT / "out"
HEAVY = ("tensorflow", "hyperopt", "scipy", "optuna", "pymongo", "keras")


@contextmanager
def serving(
    store: Store, ttl_s: float = 2.0, token: str | None = None
) -> Iterator[tuple[str, StrixStorage]]:
    """The dashboard's own server (as ``strix dashboard`` builds it) in a thread."""
    storage = StrixStorage(store, ttl_s=ttl_s)
    server = make_server(storage, "127.0.0.1", 0, token=token)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", storage
    finally:
        server.shutdown()
        server.server_close()


def http(
    url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "coordinator.dashboard", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def study_id(storage: StrixStorage, name: str) -> int:
    return storage.get_study_id_from_name(name)


# --- the command line ----------------------------------------------------------------------


def test_help_ends_with_examples_and_imports_nothing_heavy():
    code = (
        "import sys\nfrom coordinator import dashboard\n"
        "try:\n    dashboard.main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout
    help_text, heavy = out.rsplit("HEAVY", 1)
    assert heavy.strip() == "[]"
    assert "--mongo" in help_text and "--host" in help_text and "--port" in help_text
    assert help_text.rstrip().splitlines()[-1].strip().startswith("strix dashboard --host 0.0.0.0")
    assert "\nexamples:\n" in help_text


def test_host_and_port_resolve_flag_then_environment_then_default(monkeypatch):
    from coordinator.dashboard import build_parser, resolve

    monkeypatch.delenv("STRIX_DASHBOARD_HOST", raising=False)
    monkeypatch.delenv("STRIX_DASHBOARD_TOKEN", raising=False)
    monkeypatch.setenv("STRIX_DASHBOARD_PORT", "8123")
    got = resolve(build_parser().parse_args([]))
    assert (got.host, got.port, got.token) == ("127.0.0.1", 8123, None), "loopback: no token"
    assert resolve(build_parser().parse_args(["--port", "0"])).port == 0
    monkeypatch.setenv("STRIX_DASHBOARD_HOST", "::1")
    assert resolve(build_parser().parse_args([])).host == "::1"
    public = resolve(build_parser().parse_args(["--host", "0.0.0.0"]))
    assert public.generated and len(public.token) >= 32 and public.token not in repr(public)
    monkeypatch.setenv("STRIX_DASHBOARD_TOKEN", "t" * 20)
    assert resolve(build_parser().parse_args(["--host", "0.0.0.0"])).token == "t" * 20


def test_bad_port_is_one_line():
    done = cli("--port", "70000")
    assert done.returncode == 2
    assert done.stderr.startswith("strix dashboard: error: --port 70000 is out of range")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_password_never_printed(mongo_url):
    """The embedded server refuses credentials: the error names the server, not the secret."""
    secret = f"s3cret-{uuid.uuid4().hex[:6]}"
    url = mongo_url.replace("mongodb://", f"mongodb://strix:{secret}@")
    done = cli("--mongo", url, "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("strix dashboard: error: ")
    assert secret not in done.stderr + done.stdout


def _public_dashboard(mongo_url: str, db: str, token: str) -> subprocess.Popen:
    """``strix dashboard`` bound to every interface, on a free port, with this token setting."""
    cmd = [sys.executable, "-m", "coordinator.dashboard", "--mongo", mongo_url, "--db", db]
    return subprocess.Popen(
        [*cmd, "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "STRIX_DASHBOARD_TOKEN": token},
    )


def test_beyond_loopback_every_page_and_api_call_needs_the_token(mongo_server, db_name):
    """Bound to every interface, the command prints a login link once; nothing is served
    without its token, and the token shows nowhere else."""
    proc = _public_dashboard(mongo_server, db_name, token="")
    try:
        first = proc.stdout.readline()
        found = re.search(r"open http://0\.0\.0\.0:(\d+)/dashboard\?token=([\w-]{32,}) ", first)
        assert found, first
        base, token = f"http://127.0.0.1:{found.group(1)}", found.group(2)
        for path in ("/dashboard", "/api/studies", f"/api/studies?token={token[:-1]}x"):
            status, body = http(base + path)
            assert status == 401 and "token" in str(body), (path, status, body)
        assert http(f"{base}/api/studies", headers={"Authorization": f"Bearer {token}"})[0] == 200
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(f"{base}/dashboard?token={token}", timeout=60) as page:  # the link
            assert page.status == 200 and page.url == f"{base}/dashboard", "token left the URL"
        with browser.open(f"{base}/api/studies", timeout=60) as api:  # the cookie logs it in
            assert api.status == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and token not in out + err, "printed once, at start only"


def test_the_token_from_the_environment_is_never_printed(mongo_server, db_name):
    token = f"env-token-{uuid.uuid4().hex}"
    proc = _public_dashboard(mongo_server, db_name, token=token)
    try:
        first = proc.stdout.readline()
        port = re.search(r"http://0\.0\.0\.0:(\d+)/dashboard", first)
        assert port and "STRIX_DASHBOARD_TOKEN" in first, first
        base = f"http://127.0.0.1:{port.group(1)}"
        assert http(f"{base}/api/studies")[0] == 401
        assert http(f"{base}/api/studies", headers={"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert token not in first + out + err


def test_the_request_log_never_shows_the_token(store: Store, caplog):
    import logging

    token = f"log-token-{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG, logger="coordinator.dashboard")
    with serving(store, token=token) as (url, _):
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(f"{url}/api/studies?token={token}", timeout=60) as login:
            assert login.status == 200
        assert http(f"{url}/api/studies", headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert "token=***" in caplog.text and token not in caplog.text


def test_a_short_token_is_refused_in_one_line():
    env = {**os.environ, "STRIX_DASHBOARD_TOKEN": "abc"}
    cmd = [
        sys.executable,
        "-m",
        "coordinator.dashboard",
        "--port",
        "0",
        "--mongo",
        "mongodb://127.0.0.1:1",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and done.stderr.startswith(
        "strix dashboard: error: STRIX_DASHBOARD_TOKEN must be at least 16 characters"
    ), done.stderr


# --- the mapping, on every space Strix has -----------------------------------------------------


@pytest.mark.parametrize("model", ["convstrix", "vggstrix", "baseline", "simplecnn", "acosta"])
def test_every_strix_space_maps_to_distributions_that_hold_its_samples(model: str):
    """200 hyperopt draws (augmentation on): every active label gets one distribution that
    Optuna accepts for every value, and inactive conditional labels are left out."""
    from hyperopt import Trials, base, rand
    from optuna.trial import FrozenTrial, TrialState

    from coordinator.optuna_bridge.mapping import space_params, study_distributions, trial_params
    from shared.spaces import SPACES
    from shared.training.jobs import keras_space, toy_objective

    space = keras_space(model, SPACES[model](augment=True), {}, {})
    domain = base.Domain(toy_objective, space)
    docs = rand.suggest(list(range(200)), domain, Trials(), 7)
    vals = [d["misc"]["vals"] for d in docs]
    params, dists = study_distributions(space_params(domain.expr), vals)
    for i, trial_vals in enumerate(vals):
        shown, used = trial_params(trial_vals, params, dists)
        assert set(shown) == {label for label, v in trial_vals.items() if v}
        FrozenTrial(i, TrialState.WAITING, None, None, None, shown, used, {}, {}, {}, i)._validate()
    assert dists["learning_rate"].log and dists["aug_flip"].choices == (0.0, 0.5)
    if model == "vggstrix":
        assert dists["conv"].choices == (0, 1, 2)


def test_a_crafted_domain_runs_no_code_on_the_dashboard(store: Store, tmp_path: Path):
    """The dashboard unpickles every study's Domain, with its own --allow-module: the
    dotted-name gadget that reaches ``exec`` through the allowed package runs nothing."""
    from tests.store.test_domain import call, crafted

    marker = tmp_path / "pwned"
    payload = f"open({str(marker)!r}, 'w').write('x')"
    gadget = crafted(
        "tests.hyperopt_user.objective", "quadratic.__builtins__.get", call("exec"), call(payload)
    )
    store.trials("gadget", refresh=False).attachments["FMinIter_Domain"] = gadget
    insert_toy_jobs(store, "gadget", 1)
    storage = StrixStorage(store, ttl_s=0.0, allow_modules=["tests.hyperopt_user"])
    (trial,) = storage.get_all_trials(study_id(storage, "gadget"))
    assert trial.params == {"x": 0.5} and not marker.exists()


def test_hyperopt_distributions_and_outcomes_in_optuna_terms():
    import numpy as np
    from hyperopt import hp
    from hyperopt.pyll import as_apply
    from optuna.distributions import CategoricalDistribution as C
    from optuna.distributions import FloatDistribution as F
    from optuna.distributions import IntDistribution as I
    from optuna.trial import TrialState

    from coordinator.optuna_bridge.mapping import (
        LOSS,
        VAL_ACCURACY,
        distribution,
        outcome,
        space_params,
        steps,
    )

    space = {
        "a": hp.randint("a", 5),
        "b": hp.randint("b", 2, 7),
        "c": hp.qloguniform("c", 0, np.log(100), 1),
        "d": hp.quniform("d", 0, 1, 0.25),
        "e": hp.pchoice("e", [(0.3, "x"), (0.7, "y")]),
        "f": hp.normal("f", 0, 1),
        "g": hp.choice("g", [[1, 2], [3]]),
    }
    p = space_params(as_apply(space))
    assert distribution(p["a"], [0, 4]) == I(0, 4)
    assert distribution(p["b"], [2]) == I(2, 6)
    assert distribution(p["c"], [1.0, 100.0]) == I(1, 100, log=True)
    assert distribution(p["d"], [0.25]) == F(0.0, 1.0, step=0.25)
    assert distribution(p["e"], ["x"]) == C(("x", "y"))
    assert distribution(p["f"], [-0.5, 1.5]) == F(-0.5, 1.5)  # unbounded: the values' range
    assert distribution(p["g"], [1]) == C((0, 1))  # options that are not literals: indices
    assert distribution(p["d"], [0.25, 1.3]) == F(0.0, 1.3)  # off the grid: no step
    ok = {"state": 2, "result": {"status": "ok", "loss": 0.25, "val_accuracy": 0.75}}
    assert outcome(ok, VAL_ACCURACY) == (TrialState.COMPLETE, 0.75, None)
    assert outcome(ok, LOSS) == (TrialState.COMPLETE, 0.25, None)
    nan = {"state": 2, "result": {"status": "ok", "loss": float("nan")}}
    assert outcome(nan, LOSS) == (TrialState.FAIL, None, "loss is not a finite number")
    pruned = {"state": 2, "result": {"status": "pruned", "loss": 0.5, "val_accuracy": 0.5}}
    assert outcome(pruned, VAL_ACCURACY)[0] == TrialState.PRUNED
    stored = {
        "state": 2,
        "result": {
            "status": "ok",
            "pruned": True,
            "loss": 0.4,
            "val_accuracy": 0.6,
            "pruned_at_epoch": 3,
        },
    }
    assert outcome(stored, VAL_ACCURACY) == (TrialState.PRUNED, 0.6, None)
    error = {"state": 3, "error": ["strix", "lost 3 times"]}
    assert outcome(error, VAL_ACCURACY) == (TrialState.FAIL, None, "lost 3 times")
    assert outcome({"state": 0}, LOSS)[0] == TrialState.WAITING
    lost, now = {"owner": "w1", "epoch": 1, "val_accuracy": 0.5}, {"owner": "w2", "epoch": 1}
    rows = [lost, {**now, "val_accuracy": 0.75}, {**now, "epoch": 2, "val_accuracy": 0.8}]
    assert steps(rows, "w2", VAL_ACCURACY) == {1: 0.75, 2: 0.8}  # not the lost run's epochs
    assert steps(rows[:1], "w2", LOSS) == {} and steps(rows[:1], None, LOSS) == {1: 0.5}


# --- a real Keras study: the mapping ---------------------------------------------------------


@pytest.fixture(scope="module")
def vgg(mongo_server: str, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A finished VGGStrix study, run by ``coordinator.launch`` with one local worker."""
    home = tmp_path_factory.mktemp("strix-home")
    env = {**os.environ, defaults.ENV_HOME: str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env[defaults.ENV_CACHE_DIR] = str(home / "cache")
    db = f"strix_test_{uuid.uuid4().hex[:10]}"
    args = ["--model", "vggstrix", "--weights", "none", "--mongo", mongo_server, "--db", db]
    args += ["--exp-key", "vgg", "--local-workers", "1", "--max-evals", "3", "--seed", "1"]
    args += ["--image-size", "32", "--limit", "200", "--max-epochs", "2", "--no-progress"]
    args += ["--pruner", "none"]  # every trial runs both epochs; pruned ones are mapped above
    args += ["--data-dir", str(data_dir)]
    cmd = [sys.executable, "-m", "coordinator.launch", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    store = connect(mongo_server, db)
    yield store
    store.client.drop_database(db)
    store.close()


@pytest.mark.slow
def test_vggstrix_params_distributions_values_and_epochs(vgg: Store):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    from shared.spaces import flatten

    storage = StrixStorage(vgg)
    (study,) = storage.get_all_studies()
    docs = vgg.trials_in("vgg")
    assert study.study_name == "vgg" and study._study_id == docs[0]["tid"]
    assert study.direction == StudyDirection.MAXIMIZE
    trials = storage.get_all_trials(study._study_id)
    assert [t._trial_id for t in trials] == [d["tid"] for d in docs]
    branches = set()
    for trial, doc in zip(trials, docs, strict=True):
        trial._validate()  # what Optuna checks: states, values, params in distributions
        vals, spec = doc["misc"]["vals"], flatten(doc["spec"]["params"])
        assert trial.state == TrialState.COMPLETE
        assert trial.value == doc["result"]["val_accuracy"]
        assert set(trial.params) == {label for label, v in vals.items() if v}
        conv = trial.params["conv"]  # a choice of dicts: shown by index
        branches.add(conv)
        assert conv == vals["conv"][0] and ("block_size" in trial.params) == (conv == 1)
        assert ("num_blocks" in trial.params) == (conv == 2)
        for label, value in trial.params.items():
            if label != "conv":  # the rest are the values the model was built with
                want = spec[label] if isinstance(value, str) else pytest.approx(spec[label])
                assert value == want, label
        rows = vgg.history("vgg", doc["tid"])
        assert trial.intermediate_values == {r["epoch"]: r["val_accuracy"] for r in rows}
        assert sorted(trial.intermediate_values) == [1, 2]
        attrs = trial.user_attrs
        assert attrs["tid"] == doc["tid"] and attrs["host"] == doc["worker"]["host"]
        assert attrs["epochs"] == 2 and attrs["seconds"] > 0 and "failure_reason" not in attrs
        d = trial.distributions
        assert d["conv"] == CategoricalDistribution((0, 1, 2))
        assert d["batch_size"] == CategoricalDistribution((16, 32, 64))
        assert d["optimizer"] == CategoricalDistribution(("adam", "adamax", "nadam", "rms-prop"))
        assert d["learning_rate"] == FloatDistribution(1e-4, 1.0, log=True)
        assert d["fcl_dropout_rate"] == FloatDistribution(0.05, 0.5, step=0.05)
        assert d["fcl_num_layers"] == IntDistribution(1, 4)
        assert d.get("block_size", IntDistribution(1, 3)) == IntDistribution(1, 3)
        assert d.get("num_blocks", IntDistribution(2, 3)) == IntDistribution(2, 3)
    assert len(branches) >= 2, "the study should take more than one conv branch"
    best = storage.get_best_trial(study._study_id)
    assert best.value == pytest.approx(1 - vgg.best("vgg")[0]["result"]["loss"])


@pytest.mark.slow
def test_http_api_serves_the_study_and_never_writes(vgg: Store):
    before = (vgg.studies(), vgg.trials_in("vgg"), [vgg.history("vgg", t) for t in (0, 1, 2)])
    with serving(vgg) as (url, storage):
        sid = study_id(storage, "vgg")
        status, listed = http(f"{url}/api/studies")
        assert status == 200 and [s["study_name"] for s in listed["study_summaries"]] == ["vgg"]
        status, detail = http(f"{url}/api/studies/{sid}")
        assert status == 200 and len(detail["trials"]) == 3
        assert detail["directions"] == ["maximize"] and detail["objective_names"] == [
            "val_accuracy"
        ]
        assert {p["name"] for p in detail["union_search_space"]} >= {"conv", "learning_rate"}
        assert all(len(t["intermediate_values"]) == 2 for t in detail["trials"])
        assert detail["best_trials"][0]["values"] == [storage.get_best_trial(sid).value]
        assert http(f"{url}/api/studies/{sid}/param_importances")[0] == 200
        assert "mongodb://" not in json.dumps(listed) + json.dumps(detail)
        writes = [
            ("POST", "/api/studies", {"study_name": "x", "directions": ["minimize"]}),
            ("DELETE", f"/api/studies/{sid}", {}),
            ("POST", f"/api/studies/{sid}/rename", {"study_name": "y"}),
            ("PUT", f"/api/studies/{sid}/note", {"version": 1, "body": "hi"}),
            ("POST", f"/api/trials/{sid}/tell", {"state": "Fail"}),
        ]
        for method, path, body in writes:
            status, answer = http(url + path, method, body)
            assert status == 405 and "read-only" in answer["reason"], (method, path)
        with pytest.raises(ReadOnlyStorageError, match="read-only"):
            storage.set_trial_user_attr(sid, "k", 1)
        with pytest.raises(ReadOnlyStorageError, match="read-only"):
            storage.create_new_study([], "x")
    after = (vgg.studies(), vgg.trials_in("vgg"), [vgg.history("vgg", t) for t in (0, 1, 2)])
    assert after == before


# --- a live study ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(mongo_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """3 toy trials done, 1 running (120 s), 1 queued; study "broken": 1 trial in error."""
    db = f"strix_test_{uuid.uuid4().hex[:10]}"
    store = connect(mongo_server, db)
    store.create_indexes()
    post_toy(store, "live", 3, 0.0)
    insert_toy_jobs(store, "broken", 1)  # no Domain attached: the worker cannot run it
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = start_worker(mongo_server, db, "--poll-cap", "0.2", log=log)
    try:
        done = lambda: store.tally("live")["ok"] == 3 and store.tally("broken")["error"] == 1  # noqa: E731
        assert wait_until(done, 120), log.read_text()[-2000:]
        post_toy(store, "live", 2, 120.0)
        running = lambda: store.tally("live")["running"] == 1  # noqa: E731
        assert wait_until(running, 60), log.read_text()[-2000:]
        yield store
    finally:
        stop_all([worker])
        store.client.drop_database(db)
        store.close()


def trial_rows(url: str, sid: int) -> list[dict]:
    status, detail = http(f"{url}/api/studies/{sid}")
    assert status == 200, detail
    return detail["trials"]


@pytest.mark.slow
def test_live_states_values_and_failures(live: Store):
    with serving(live) as (url, storage):
        sid = study_id(storage, "live")
        rows = trial_rows(url, sid)
        assert [r["state"] for r in rows] == ["Complete"] * 3 + ["Running", "Waiting"]
        docs = live.trials_in("live")
        for row, doc in zip(rows[:3], docs[:3], strict=True):
            assert row["values"] == [doc["result"]["loss"]]  # toy objective: minimize loss
            assert row["params"][0]["name"] == "x"
            assert row["params"][0]["param_external_value"] == str(doc["misc"]["vals"]["x"][0])
        assert http(f"{url}/api/studies/{sid}")[1]["directions"] == ["minimize"]
        (failed,) = trial_rows(url, study_id(storage, "broken"))
        reason = {a["key"]: a["value"] for a in failed["user_attrs"]}["failure_reason"]
        assert failed["state"] == "Fail" and "FMinIter_Domain" in reason


@pytest.mark.slow
def test_new_trials_and_epochs_appear_without_restart(live: Store):
    with serving(live, ttl_s=1.0) as (url, storage):
        sid = study_id(storage, "live")
        n = len(trial_rows(url, sid))
        t0 = time.monotonic()
        post_toy(live, "live", 1, 120.0)
        assert wait_until(lambda: len(trial_rows(url, sid)) == n + 1, 15, interval=0.2)
        seen_trial = time.monotonic() - t0
        # the rows a Keras worker writes after each epoch (the toy objective has none)
        (running,) = live.trials_in("live", states=[live_state("RUNNING")])
        base = {"exp_key": "live", "tid": running["tid"], "owner": running["owner"]}
        t0 = time.monotonic()
        for epoch, acc in ((1, 0.5), (2, 0.75)):
            live.add_metric({**base, "epoch": epoch, "time": time.time(), "val_accuracy": acc})
        want = {"1": 0.5, "2": 0.25}  # a loss study: 1 - accuracy, on the value's scale

        def shown() -> bool:
            row = next(r for r in trial_rows(url, sid) if r["trial_id"] == running["tid"])
            return {str(v["step"]): v["value"] for v in row["intermediate_values"]} == want

        assert wait_until(shown, 15, interval=0.2)
        seen_epochs = time.monotonic() - t0
    print(f"new trial shown after {seen_trial:.1f}s, new epochs after {seen_epochs:.1f}s")
    assert seen_trial < 8 and seen_epochs < 8


@pytest.mark.slow
def test_the_command_serves_on_loopback_and_stops_cleanly(live: Store, mongo_server: str):
    cmd = [sys.executable, "-m", "coordinator.dashboard", "--mongo", mongo_server]
    cmd += ["--db", live.target.db, "--port", "0"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        first = proc.stdout.readline()  # "strix dashboard: 2 studies in ...; open http://..."
        url = re.search(r"open (http://127\.0\.0\.1:\d+)/dashboard ", first)
        assert url, first + proc.stderr.read()
        status, listed = http(f"{url.group(1)}/api/studies")
        names = sorted(s["study_name"] for s in listed["study_summaries"])
        assert status == 200 and names == ["broken", "live"]
        assert http(f"{url.group(1)}/dashboard")[0] == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err == "", err


def test_a_mongodb_restart_keeps_the_page_and_it_catches_up(tmp_path: Path, caplog):
    """Its own embedded server, stopped and started again on the same data and port."""
    from shared.store.embedded import start_embedded

    server = start_embedded(tmp_path / "nx")
    store = connect(server.url, "restart", timeout_ms=1000)
    try:
        post_toy(store, "s", 2)
        storage = StrixStorage(store, ttl_s=0.1)
        sid = study_id(storage, "s")
        assert len(storage.get_all_trials(sid)) == 2
        server.stop()
        time.sleep(0.2)
        assert len(storage.get_all_trials(sid)) == 2  # the last snapshot, with a warning
        assert [s.study_name for s in storage.get_all_studies()] == ["s"]
        assert "store unavailable" in caplog.text
        server = start_embedded(tmp_path / "nx", port=server.port)
        post_toy(store, "s", 1)
        assert wait_until(lambda: len(storage.get_all_trials(sid)) == 3, 15)
    finally:
        store.close()
        server.stop()


def live_state(name: str) -> Any:
    from shared.store import State

    return State[name]


# --- the browser ----------------------------------------------------------------------------


def find_chromium() -> str | None:
    """Chromium on PATH; CI machines (root, apt) get it installed once."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get") and os.geteuid() == 0:
        install = "apt-get install -y -qq chromium"
        script = f"{install} || (apt-get update -qq && {install})"
        subprocess.run(["sh", "-c", script], capture_output=True, timeout=600, check=False)
    return shutil.which("chromium")


def chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    flags += ["--hide-scrollbars", "--window-size=1400,1000", "--virtual-time-budget=15000"]
    flags += [f"--user-data-dir={profile}", "--no-first-run"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=90)


def page_text(html: str) -> str:
    html = re.sub(r"<(style|script)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def js_number(x: float) -> str:
    """How the page prints a float (JavaScript: no exponent between 1e-6 and 1e21)."""
    text = repr(x)
    if "e" in text and 1e-6 <= abs(x) < 1e21:
        text = format(Decimal(text), "f")
    return text


@pytest.mark.slow
def test_browser_shows_the_live_study(live: Store, tmp_path: Path):
    browser = find_chromium()
    if browser is None:
        pytest.skip("chromium is not installed and `apt-get install -y chromium` failed")
    OUT.mkdir(exist_ok=True)
    shot = OUT / "dashboard-live.png"
    shot.unlink(missing_ok=True)
    token = "browser-test-token-" + uuid.uuid4().hex
    with serving(live, token=token) as (url, storage):
        sid = study_id(storage, "live")
        trials = storage.get_all_trials(sid)
        best = storage.get_best_trial(sid)
        page = f"{url}/dashboard/studies/{sid}"
        refused = chromium(browser, tmp_path / "p0", "--dump-dom", page)
        login = f"?token={token}"  # the link the command prints: a cookie, then the page
        history = chromium(browser, tmp_path / "p1", "--dump-dom", page + login)
        listing = chromium(browser, tmp_path / "p2", "--dump-dom", f"{page}/trials{login}")
        chromium(browser, tmp_path / "p3", f"--screenshot={shot}", page + login)
    shut_out = page_text(refused.stdout)
    assert "asks for its token" in shut_out and "Best Trial" not in shut_out, shut_out[:2000]
    text, listed = page_text(history.stdout), page_text(listing.stdout)
    assert f"Best Trial (number={best.number})" in text, text[:2000]
    assert js_number(best.value) in text
    assert f"{len(trials)} Trials" in listed and "Running" in listed, listed[:2000]
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000, "the screenshot looks blank"


# --- load ------------------------------------------------------------------------------------


def big_study(store: Store, n: int, running: int, epochs: int) -> None:
    """A ConvStrix study of ``n`` trials (``running`` still running), posted like ``fmin``."""
    import cloudpickle
    from hyperopt import base, rand

    from shared.spaces import convstrix_space
    from shared.training.jobs import keras_space, objective

    trials = store.trials("big", refresh=False)
    domain = base.Domain(objective, keras_space("convstrix", convstrix_space(), {}, {}))
    trials.attachments["FMinIter_Domain"] = cloudpickle.dumps(domain)
    docs = rand.suggest(trials.new_trial_ids(n), domain, trials, 1)
    now = time.time()
    for i, doc in enumerate(docs):
        acc = 0.80 + 0.1 * math.sin(i)
        doc["state"] = 1 if i >= n - running else 2
        doc["owner"], doc["worker"] = "w", {"id": "w", "host": "bench", "gpu": i % 4}
        doc["started"], doc["ended"] = now - 60, now
        if doc["state"] == 2:
            doc["result"] = {"status": "ok", "loss": 1 - acc, "val_accuracy": acc, "epochs": 5}
    trials.insert_trial_docs(docs)
    for doc in docs[-running - epochs :]:  # epochs for the running ones and a few finished
        for e in range(1, epochs + 1):
            store.add_metric(
                {
                    "exp_key": "big",
                    "tid": doc["tid"],
                    "owner": "w",
                    "epoch": e,
                    "time": now,
                    "val_accuracy": 0.5 + 0.05 * e,
                }
            )


@pytest.mark.slow
def test_open_pages_on_a_1000_trial_study_barely_load_mongodb(store: Store):
    """3 pages polling every second (the dashboard's own pace is 2-10 s) for 12 s."""
    big_study(store, 1000, running=4, epochs=10)
    with serving(store) as (url, storage):
        sid = study_id(storage, "big")
        t0 = time.monotonic()
        assert len(trial_rows(url, sid)) == 1000
        first_s = time.monotonic() - t0
        first = (sum(storage.calls.values()), storage.docs_read, storage.read_s)
        stop, latencies = threading.Event(), []

        def page() -> None:
            while not stop.wait(1.0):
                t = time.monotonic()
                http(f"{url}/api/studies")
                http(f"{url}/api/studies/{sid}?after=996")
                latencies.append(time.monotonic() - t)

        pages = [threading.Thread(target=page) for _ in range(3)]
        t1 = time.monotonic()
        for p in pages:
            p.start()
        time.sleep(12)
        stop.set()
        for p in pages:
            p.join()
        window = time.monotonic() - t1
        calls = sum(storage.calls.values()) - first[0]
        docs, read_s = storage.docs_read - first[1], storage.read_s - first[2]
    latencies.sort()
    report = {
        "trials": 1000,
        "running": 4,
        "pages": 3,
        "first_load_s": round(first_s, 2),
        "first_load_store_calls": first[0],
        "first_load_docs": first[1],
        "requests_per_s": round(2 * len(latencies) / window, 1),
        "store_calls_per_s": round(calls / window, 2),
        "docs_per_s": round(docs / window, 1),
        "store_ms_per_s": round(1000 * read_s / window, 1),
        "median_request_s": round(latencies[len(latencies) // 2], 3),
        "calls": dict(storage.calls),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "dashboard-load.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    assert first[0] <= 1000 + 10  # the jobs, the Domain, each trial's epochs: once
    refreshes = window / storage.ttl_s + 1  # per TTL, not per request or per page
    assert calls <= refreshes * (1 + 2 + 4), report  # studies; unfinished + tally; 4 running
    assert report["docs_per_s"] < 100, report  # the 1000 finished jobs are not re-read
