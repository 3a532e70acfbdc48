"""A hyperopt objective whose package the worker cannot import (issue 28): each trial
fails with one line naming the module and the fix, and the worker, after
--max-consecutive-failures such trials, exits 1 (a supervisor sees it failed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from shared.store import State, Store
from tests.helpers import ROOT, start_worker, stop_all


def test_a_missing_objective_module_is_named_and_the_worker_exits_1(
    mongo_url: str, db_name: str, store: Store, tmp_path: Path
) -> None:
    example = tmp_path / "hyperopt"
    shutil.copytree(ROOT / "examples" / "hyperopt", example)
    search = example / "search.py"
    url = f"mongo://{urlsplit(mongo_url).netloc}/{db_name}/jobs"
    search.write_text(search.read_text().replace("mongo://localhost:27017/foo_db/jobs", url))
    script = subprocess.Popen(
        [sys.executable, str(search)],
        cwd=example,  # mypkg importable for the script, not for the worker
        env={"PYTHONPATH": f"{example}:{ROOT}", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = tmp_path / "worker.log"
    worker = start_worker(
        mongo_url,
        db_name,
        "--exp-key",
        "exp1",
        "--allow-module",
        "mypkg",
        "--max-consecutive-failures",
        "2",
        log=log,
    )
    try:
        assert worker.wait(timeout=300) == 1, log.read_text()[-2000:]
    finally:
        script.kill()
        script.wait()
        stop_all([worker])
    errors = store.trials_in("exp1", [State.ERROR], ["error"])
    assert len(errors) == 2
    for doc in errors:
        reason = doc["error"][-1] if isinstance(doc["error"], list) else str(doc["error"])
        assert "module 'mypkg'" in reason and "--allow-module mypkg" in reason, reason
        assert "PYTHONPATH" in reason and "Traceback" not in reason
    assert "2 trials failed in a row: exiting with code 1" in log.read_text()
