"""``strix mongo start|stop|status`` and how commands pick their store (issue 28).

Real processes only: ``strix mongo`` runs as a subprocess (as a user's shell would), the
server is the real nx-27017, and "a new shell" is a fresh ``python -c`` process that has
nothing but the documented snippet.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from coordinator.study.local import embedded_or_running
from shared.store import connect
from shared.store.embedded import free_port, is_listening, marked, start_embedded
from tests.helpers import ROOT


def strix(*args: str, home: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "STRIX_HOME": str(home), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=120,
    )


@pytest.fixture
def started(tmp_path: Path):
    """``strix mongo start --port P`` in a fresh home; stopped again at the end."""
    home, port = tmp_path / "home", free_port()
    out = strix("mongo", "start", "--port", str(port), home=home)
    assert out.returncode == 0, out.stderr
    try:
        yield home, port, out.stdout
    finally:
        strix("mongo", "stop", home=home)


def _finished_trial(url: str, exp_key: str) -> None:
    """One finished trial with the fields the documented queries read."""
    store = connect(url, "strix")
    try:
        trials = store.trials(exp_key, refresh=False)
        (tid,) = trials.new_trial_ids(1)
        misc = {"tid": tid, "cmd": ("domain_attachment", "FMinIter_Domain"), "workdir": None}
        misc |= {"idxs": {"lr": [tid]}, "vals": {"lr": [0.01]}}
        spec = {"params": {"lr": 0.01}}
        trials.insert_trial_docs(trials.new_trial_docs([tid], [spec], [{"status": "new"}], [misc]))
        job = store.reserve("test", exp_key, ["light"])
        assert job is not None and job["tid"] == tid
        result = {"status": "ok", "loss": 0.1, "val_accuracy": 0.9, "epochs": 3}
        assert store.finish(job, "test", result)
    finally:
        store.close()


def _snippet(doc: str) -> str:
    """docs/results.md's connect block and "best trials" block, as written."""
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    connect_block = next(b for b in blocks if "MongoClient" in b)
    best_block = next(b for b in blocks if "db.jobs.find" in b and ".limit(10)" in b)
    return connect_block + best_block


def test_start_status_stop(started, tmp_path: Path) -> None:
    home, port, said = started
    url = f"mongodb://127.0.0.1:{port}"
    assert url in said and "strix mongo stop" in said
    assert str(home / "mongo") in said
    status = strix("mongo", "status", home=home)
    assert status.returncode == 0 and url in status.stdout
    again = strix("mongo", "start", home=home)  # idempotent, whatever --port says now
    assert again.returncode == 0 and "already running" in again.stdout and url in again.stdout
    stopped = strix("mongo", "stop", home=home)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not is_listening("127.0.0.1", port)
    status = strix("mongo", "status", home=home)
    assert status.returncode == 3 and "not running" in status.stdout


def test_results_snippet_works_in_a_new_shell(started) -> None:
    """The pymongo snippet of docs/results.md, run in a fresh process after `strix mongo
    start`. The one change: the port, as this test cannot own 27017 on a shared host."""
    _, port, _ = started
    url = f"mongodb://127.0.0.1:{port}"
    _finished_trial(url, "convstrix-128px")
    code = _snippet((ROOT / "docs" / "results.md").read_text()).replace("27017", str(port))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "0.9 3 {'lr': 0.01}" in out.stdout


def test_commands_find_the_started_server_on_any_port(started) -> None:
    """Without --mongo, a command uses the server `strix mongo start` left running, even
    on another port than the one it would start its own on."""
    home, port, _ = started
    with ExitStack() as stack:
        url = embedded_or_running(home, stack, port=free_port())
    assert url == f"mongodb://127.0.0.1:{port}"
    assert marked(home / "mongo") is not None  # the command did not stop it


def test_a_foreign_server_is_named_once(tmp_path: Path, caplog) -> None:
    """A server Strix did not start for this home (here: one with its data elsewhere) is
    used, with one warning that says so and how to choose."""
    foreign = start_embedded(tmp_path / "elsewhere", port=free_port())
    try:
        caplog.set_level(logging.INFO, logger="coordinator.study.local")
        with ExitStack() as stack:
            url = embedded_or_running(tmp_path / "home", stack, port=foreign.port)
        assert url == foreign.url
        said = [r for r in caplog.records if "Strix did not start" in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.WARNING
        assert f"127.0.0.1:{foreign.port}" in said[0].getMessage()
        refused = strix("mongo", "start", "--port", str(foreign.port), home=tmp_path / "home")
        assert refused.returncode == 2
        assert "already taken by a server Strix did not start" in refused.stderr
    finally:
        foreign.stop()


def test_a_command_server_stops_with_the_command(tmp_path: Path) -> None:
    """Nothing running: the command starts its own on the given port and stops it on exit,
    leaving no marker behind."""
    port = free_port()
    with ExitStack() as stack:
        url = embedded_or_running(tmp_path, stack, port=port)
        assert url == f"mongodb://127.0.0.1:{port}"
        assert marked(tmp_path / "mongo") is not None
    assert not is_listening("127.0.0.1", port)
    assert not (tmp_path / "mongo" / "strix-server.json").exists()


def test_port_setting_is_checked(tmp_path: Path) -> None:
    out = strix("mongo", "start", home=tmp_path, env={"STRIX_EMBEDDED_PORT": "70000"})
    assert out.returncode == 2 and "--port" in out.stderr and "70000" in out.stderr
