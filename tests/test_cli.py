"""The front door: one ``strix`` command, its subcommands, and what every command shares.

Every ``--help`` must answer without importing TensorFlow, hyperopt or scipy (checked on
the imported modules, not the time), end with examples, and the old entry points must
keep working as thin aliases.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coordinator.cli import COMMANDS
from shared.config import settings
from tests.helpers import ROOT

HEAVY = ("tensorflow", "keras", "hyperopt", "scipy", "torch", "jax")
PROBE = """
import sys
from coordinator.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _run(*args: str, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, **kw
    )


def test_strix_help_lists_every_subcommand() -> None:
    res = _run("-m", "coordinator.cli", "--help")
    assert res.returncode == 0, res.stderr
    for name in COMMANDS:
        assert f"\n  {name} " in res.stdout, name
    assert res.stdout.rstrip().splitlines()[-1].strip().startswith("strix CMD --help")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_is_light_and_ends_with_examples(name: str) -> None:
    res = _run("-c", PROBE.format(argv=[name, "--help"], heavy=HEAVY))
    assert res.returncode == 0, res.stderr[-2000:]
    out, _, heavy = res.stdout.rpartition("HEAVY=")
    assert heavy.strip() == "", f"`strix {name} --help` imported {heavy.strip()}"
    assert "examples:" in out and out.rstrip().endswith(out.split("examples:")[-1].rstrip())
    assert "strix" in out.split("examples:")[-1] or "python -m" in out.split("examples:")[-1]


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "coordinator.launch", "--help"],
        ["-m", "coordinator.results", "--help"],
        ["-m", "coordinator.final", "--help"],
        ["-m", "coordinator.report", "--help"],
        ["-m", "coordinator.cluster", "--help"],
        ["-m", "worker", "--help"],
        ["-m", "shared.data", "prepare", "--help"],
    ],
)
def test_old_entry_points_still_answer(argv: list[str]) -> None:
    res = _run(*argv)
    assert res.returncode == 0 and "examples:" in res.stdout, res.stderr[-2000:]


def test_an_unknown_flag_names_the_closest_one() -> None:
    res = _run("-m", "coordinator.cli", "launch", "--epochs", "3")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "strix launch: error: unrecognized arguments: --epochs 3 (did you mean --max-epochs or "
        "--min-epochs?); see strix launch --help"
    )


def test_an_abbreviated_flag_is_refused_not_guessed() -> None:
    res = _run("-m", "coordinator.cli", "launch", "--max-eval", "3")
    assert res.returncode == 2
    assert res.stderr.startswith("strix launch: error: unrecognized arguments: --max-eval 3")
    assert "did you mean --max-evals" in res.stderr


def test_an_unknown_command_is_one_line() -> None:
    res = _run("-m", "coordinator.cli", "lanch")
    assert res.returncode == 2 and "unknown command 'lanch'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_errors_are_one_line_with_exit_2_and_json_logs_parse() -> None:
    res = _run("-m", "coordinator.cli", "results", "--mongo", "nope", "--log-format", "json")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("strix results: error: malformed MongoDB URI 'nope'")
    code = (
        "import argparse, logging\nfrom shared.config import cli\n"
        "cli.setup_logging(argparse.Namespace(log_format='json', verbose=False, quiet=False))\n"
        "logging.getLogger('strix.test').info('hello %s', 'world')\n"
    )
    res = _run("-c", code)
    (row,) = [json.loads(line) for line in res.stderr.splitlines()]
    assert row["message"] == "hello world" and row["level"] == "INFO"
    assert {"time", "logger"} <= set(row)


def test_docs_config_is_generated_from_the_declarations() -> None:
    current = (ROOT / "docs" / "config.md").read_text()
    assert current == settings.markdown(), "run: python -m shared.config.settings > docs/config.md"


def test_every_setting_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for s in settings.SETTINGS.values():
        if s.env_var is None or s.type is not int:
            continue
        monkeypatch.setenv(s.env_var, "7")
        assert settings.resolve({}, [s.name])[s.name] == 7, s.name
        assert settings.resolve({s.name: 9}, [s.name])[s.name] == 9, "the flag wins"
        monkeypatch.setenv(s.env_var, "seven")
        with pytest.raises(Exception, match=f"{s.env_var} must be an integer, got 'seven'"):
            settings.resolve({}, [s.name])


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["launch", "--data-dir", "/nonexistent"], "data directory /nonexistent does not exist"),
        (["launch", "--model", "vggstrix", "--image-size", "8"], "too small for vggstrix"),
        (["launch", "--mongo", "localhost:27017"], "malformed MongoDB URI 'localhost:27017'"),
        (["worker", "--data-dir", "/nonexistent"], "data directory /nonexistent does not exist"),
        (["worker", "--max-attempts", "0"], "--max-attempts must be >= 1, got 0"),
        (["results", "--mongo", "nope"], "malformed MongoDB URI 'nope'"),
        (["train", "--model", "simplecnn", "--set", "nosuchkey=1"], "no parameter 'nosuchkey'"),
        (["train", "--model", "acosta", "--set", "filter=64"], "(did you mean filters?)"),
        (["launch", "--image-size", "8"], "pass --clamp to draw num_blocks up to 4"),
    ],
)
def test_config_errors_come_before_tensorflow_and_mongodb(argv: list[str], fragment: str) -> None:
    """No TensorFlow import, no server contact: the error is one line, at once."""
    res = _run("-c", PROBE.format(argv=argv, heavy=HEAVY))
    heavy = res.stdout.rpartition("HEAVY=")[2].strip()
    assert heavy == "", f"`strix {' '.join(argv)}` imported {heavy}"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], res.stderr


def test_tensorflow_starts_without_its_cxx_lines() -> None:
    """TensorFlow >= 2.16 prints absl lines (oneDNN, CUDA drivers, cuInit) before it reads
    TF_CPP_MIN_LOG_LEVEL; the worker and final load Keras through backend.load_quietly()."""
    code = (
        "from shared.config import cli\nfrom shared.training import backend\n"
        "cli.quiet_tensorflow()\nbackend.select('tensorflow')\n"
        "backend.load_quietly()\nimport keras\nkeras.ops.ones(2)\nprint('ready')"
    )
    res = _run("-c", code, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": ""})
    assert res.returncode == 0 and res.stdout.strip() == "ready", res.stderr
    assert res.stderr == "", res.stderr
