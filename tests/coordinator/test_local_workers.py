"""Local workers: what ``strix launch --local-workers`` gives them, and what it keeps back.

A MongoDB URI may hold a password: it never reaches a command line that ``ps`` shows. Real
local workers, started as launch starts them; the test reads what any user of the host can
read, ``/proc/PID/cmdline``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.launch import build_parser, local_workers, resolve, worker_args
from coordinator.study.procs import wait_for_log
from tests.helpers import start_worker, stop_all, wait_until

SECRET = "s3cret-in-the-uri"


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_local_workers_get_the_uri_outside_their_command_line(
    mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    url = f"{mongo_url}/?appname={SECRET}"  # stands for any secret the URI carries
    argv = ["--exp-key", "cmdline", "--home", str(tmp_path / "home"), "--db", db_name]
    cfg = resolve(build_parser().parse_args([*argv, "--local-workers", "1"]))
    workers = local_workers(cfg, url, None, prepare=False)
    workers.start()
    helper = start_worker(url, db_name, "--exp-key", "cmdline", log=tmp_path / "helper.log")
    try:
        (proc,) = workers.procs
        for p in (proc, helper):
            assert wait_until(lambda p=p: _cmdline(p.pid), 10), "exec takes a moment"
            shown = _cmdline(p.pid)
            assert "worker" in shown and "--exp-key cmdline" in shown, shown
            assert SECRET not in shown and "mongodb://" not in shown, shown
        # and yet they reached MongoDB: the URI came through the environment
        wait_for_log(proc, workers.log_dir / "worker-0.log", "ready on", timeout=120)
        wait_for_log(helper, tmp_path / "helper.log", "ready on", timeout=120)
    finally:
        workers.stop()
        stop_all([helper])


def test_local_workers_admit_the_study_own_tb_dir_and_weights_file(tmp_path: Path) -> None:
    """A worker refuses paths outside its --workdir / --weights-dir; launch's own workers
    get the directories its --tb-dir and --weights name."""
    argv = ["--model", "mobilenet", "--home", str(tmp_path), "--tb-dir", str(tmp_path / "tb")]
    cfg = resolve(build_parser().parse_args([*argv, "--weights", str(tmp_path / "w" / "m.h5")]))
    args = " ".join(worker_args(cfg, None))
    assert f"--workdir {tmp_path / 'tb'}" in args and f"--weights-dir {tmp_path / 'w'}" in args
    plain = " ".join(worker_args(resolve(build_parser().parse_args(argv[:2])), None))
    assert "--workdir" not in plain and "--weights-dir" not in plain and "--mongo" not in plain
