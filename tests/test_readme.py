"""README.md as a new user reads it: after the demo, its commands work as written, in
order, in a new shell (a clean environment: no STRIX_* variables, no activated venv)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()


def after_the_demo() -> list[str]:
    """The first bash block of the 'After the demo' section, one command a line."""
    section = README.split("## After the demo", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README lost its 'After the demo' commands"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line]


def demo_flags() -> list[str]:
    """The `strix launch` flags scripts/demo.sh runs with (its DEMO=(...) array)."""
    demo = re.search(r"\nDEMO=\((.*?)\)", (ROOT / "scripts" / "demo.sh").read_text(), re.S)
    assert demo, "scripts/demo.sh lost its DEMO=(...) flags"
    return shlex.split(demo.group(1))


def test_readme_names_the_study_the_demo_creates() -> None:
    flags = demo_flags()
    size, model = flags[flags.index("--image-size") + 1], flags[flags.index("--model") + 1]
    assert all(f"--exp-key {model}-{size}px" in c for c in after_the_demo() if "--exp-key" in c)
    assert len(after_the_demo()) >= 4


@pytest.mark.slow
def test_readme_commands_work_in_a_new_shell(data_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    demo_env = {**os.environ, "HOME": str(home), "STRIX_DATA_DIR": str(data_dir)}
    demo_env.pop("STRIX_HOME", None)
    flags = demo_flags()  # the demo's study, made small: its model and size, fewer images
    key = f"{flags[flags.index('--model') + 1]}-{flags[flags.index('--image-size') + 1]}px"
    demo = [sys.executable, "-m", "coordinator.cli", "launch", *flags, "--local-workers", "1"]
    demo += ["--max-evals", "2", "--max-epochs", "1", "--limit", "300", "--no-progress"]
    res = subprocess.run(demo, cwd=ROOT, env=demo_env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (home / ".strix" / "logs" / key).is_dir(), "per-study worker logs"
    clean = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
    for command in after_the_demo():
        if " dashboard" in command:  # serves until Ctrl-C; test_dashboard covers it
            continue
        argv = shlex.split(command)
        if "final" in argv:
            argv += ["--epochs", "1"]  # the same command, one epoch to keep CI short
        res = subprocess.run(argv, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{command}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
        assert "Traceback" not in res.stderr, command


def coming_from_hyperopt() -> str:
    """The bash block of README's 'Coming from hyperopt' section."""
    section = README.split("## Coming from hyperopt", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README lost its hyperopt migration commands"
    return block.group(1)


def _hyperopt_env(tmp_path: Path, port: int) -> dict:
    """A new shell: the repository on PYTHONPATH (as the editable install provides it),
    Strix's home in tmp_path, and the port this test owns instead of 27017."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIX_")}
    env |= {"STRIX_HOME": str(tmp_path / "home"), "STRIX_EMBEDDED_PORT": str(port)}
    return env | {"PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_the_hyperopt_migration_runs_as_the_readme_shows(tmp_path: Path) -> None:
    """README's commands, in order, in bash: the embedded server, the worker with the
    package importable and allowed, the unchanged script. The one change: the port (in
    the commands and in a copy of examples/hyperopt), as this test cannot own 27017."""
    import shutil

    from shared.store.embedded import free_port

    port = free_port()
    example = tmp_path / "examples" / "hyperopt"
    shutil.copytree(ROOT / "examples" / "hyperopt", example)
    search = example / "search.py"
    search.write_text(search.read_text().replace("27017", str(port)))
    script = coming_from_hyperopt().replace("27017", str(port))
    script = script.replace("cd examples/hyperopt", f"cd {example}")
    script = f"set -e\n{script}\nkill $!; wait || true\nstrix mongo stop\n"
    res = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=_hyperopt_env(tmp_path, port),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    best = re.search(r"^\{'x': (\S+)\}$", res.stdout, re.M)  # search.py prints fmin's dict
    assert best and -10 <= float(best.group(1)) <= 10, res.stdout
    assert "stopped mongodb://" in res.stdout
    _count_done(tmp_path, port)


def _count_done(tmp_path: Path, port: int) -> None:
    """The 10 trials are DONE in the README's database (restart the server to look)."""
    from shared.store import State, connect
    from shared.store.embedded import start_embedded

    server = start_embedded(tmp_path / "home" / "mongo", port=port)
    try:
        store = connect(server.url, "foo_db")
        assert len(store.trials_in("exp1", [State.DONE])) == 10
        store.close()
    finally:
        server.stop()
