"""What every Strix command shares: its parser, its logging, its error boundary.

A command is a ``build_parser()`` and a ``run(args) -> int``; :func:`main` does the rest
the same way for all of them:

* common options declared once: ``--mongo``/``--db`` (commands that use the store),
  ``-v/--verbose``, ``-q/--quiet`` and ``--log-format text|json``;
* every ``--help`` shows defaults and ends with examples; an unknown flag gets one line
  naming the closest known one;
* TensorFlow's C++ start-up lines are silenced before anything can import it;
* a :class:`~shared.errors.StrixError` becomes one line on stderr and exit code 2; an
  unexpected exception keeps its traceback.

Exit codes: 0 done, 1 a failure reported by the command, 2 bad input (flags,
environment, data, MongoDB), 130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from shared.config import settings
from shared.errors import StrixError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
QUIET_LIBRARIES = ("hyperopt", "absl", "pymongo", "tensorflow", "matplotlib", "PIL", "h5py")


class Parser(argparse.ArgumentParser):
    """argparse, with one-line errors that suggest the closest known flag.

    Abbreviations are off: ``--max-eval`` must not quietly mean ``--max-evals`` today and
    become ambiguous when a flag is added tomorrow."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("allow_abbrev", False)
        super().__init__(*args, **kw)

    def error(self, message: str) -> NoReturn:
        hint = self._closest(message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{hint}; see {self.prog} --help\n")

    def _closest(self, message: str) -> str:
        if "unrecognized arguments:" not in message:
            return ""
        known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        for word in message.split(":", 1)[1].split():
            if not word.startswith("-"):
                continue
            flag = word.split("=")[0]
            match = difflib.get_close_matches(flag, known, n=2, cutoff=0.6)
            match = match or [k for k in known if flag.lstrip("-") in k][:2]
            if match:
                return f" (did you mean {' or '.join(sorted(match))}?)"
        return ""


class _Help(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout; adds a flag's default unless its help says it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS, [], ())
        if shown and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def new_parser(
    prog: str, description: str, examples: str, *, store: bool = False, **kw: Any
) -> Parser:
    """A command's parser with the common options; ``examples`` closes its ``--help``."""
    p = Parser(
        prog=prog,
        description=description,
        epilog="examples:\n" + examples.strip("\n").removeprefix("examples:\n"),
        formatter_class=_Help,
        **kw,
    )
    if store:
        settings.add(p, "mongo", "db")
    add_logging_options(p)
    return p


def add_logging_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    g.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines as")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        row = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            row["exception"] = self.formatException(record.exc_info)
        return json.dumps(row)


def setup_logging(args: argparse.Namespace, level: int = logging.INFO) -> None:
    """The one logging setup: level from -v/-q, text or JSON lines on stderr."""
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    if getattr(args, "log_format", "text") == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ logs unless the user chose a level: INFO and WARNING
    always, and on a machine without an NVIDIA driver also its CUDA errors (cuInit)."""
    level = "2" if shutil.which("nvidia-smi") else "3"
    if not os.environ.get("TF_CPP_MIN_LOG_LEVEL"):  # unset or empty: the user chose nothing
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = level


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def main(
    prog: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int | None],
    argv: list[str] | None = None,
    *,
    level: int = logging.INFO,
    interrupted: str = "interrupted",
) -> int:
    """Parse, set up logging, run; the error boundary of every command."""
    quiet_tensorflow()
    args = build_parser().parse_args(argv)
    setup_logging(args, level)
    try:
        return run(args) or EXIT_OK
    except StrixError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{prog}: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... | head`: the reader has all it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return EXIT_OK
