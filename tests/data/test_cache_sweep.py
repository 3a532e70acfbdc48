"""Temp dirs of cache builds that died are removed at start; a live build's are kept.

Real processes: one builder is killed with SIGKILL mid-build, another keeps building.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.data.cache import sweep_stale
from tests.helpers import ROOT, wait_until

BUILD = """
import sys, time
from pathlib import Path
from shared.data.cache import atomic_dir
def build(tmp):
    (tmp / "x.npy").write_bytes(b"0" * 1000)
    print("building", flush=True)
    time.sleep(600)
atomic_dir(Path(sys.argv[1]) / sys.argv[2], build)
"""


def _builder(cache: Path, name: str) -> subprocess.Popen:
    env = {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, str(cache), name], stdout=subprocess.PIPE, env=env
    )


def test_a_killed_builds_temp_dir_goes_and_a_live_ones_stays(tmp_path: Path) -> None:
    dead, live = _builder(tmp_path, "dead"), _builder(tmp_path, "live")
    try:
        for proc in (dead, live):
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"building"
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        (old := tmp_path / "features" / ".legacy.tmp-x").mkdir(parents=True)  # no lock file
        assert len(list(tmp_path.rglob(".*.tmp-*"))) == 3
        removed = sweep_stale(tmp_path)
        assert [p.name.split(".tmp-")[0] for p in removed] == [".dead"]
        assert wait_until(lambda: len(list(tmp_path.glob(".live.tmp-*"))) == 1, 5)
        assert old.is_dir()  # fresh and unlocked: it may be a build that just started
    finally:
        live.kill()
        live.wait()
    time.sleep(0.1)
    assert [p.name.split(".tmp-")[0] for p in sweep_stale(tmp_path)] == [".live"]
