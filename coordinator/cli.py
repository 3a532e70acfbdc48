"""``strix``: the one front door, a table of subcommands (as Optuna's ``_COMMANDS``).

Each subcommand is a module with ``main(argv)``; it is imported only when run, so
``strix --help`` and ``strix CMD --help`` stay instant. The old entry points
(``python -m coordinator.launch``, ``strix-worker``...) are the same modules.
"""

from __future__ import annotations

import importlib
import sys

from shared.config.cli import EXIT_USAGE, Parser

COMMANDS: dict[str, tuple[str, str]] = {
    "launch": ("coordinator.launch", "post a hyperopt study and see it through"),
    "worker": ("worker.__main__", "pull trials from MongoDB and train them (GPU-pinned)"),
    "results": ("coordinator.results", "status, best, failed and running trials of studies"),
    "final": ("coordinator.final", "retrain the best trial, per-class report, export"),
    "train": ("coordinator.train", "train one configuration without a study, test, export"),
    "report": ("coordinator.report", "plots and hyper-parameter correlations of a study"),
    "prepare": ("shared.data.prepare", "prepare the resized Fashion-MNIST cache once per size"),
    "cache": ("coordinator.caches", "list or remove the data and feature caches"),
    "cluster": ("coordinator.cluster", "MongoDB plus one-GPU workers through Docker"),
    "dashboard": ("coordinator.dashboard", "a live study dashboard in the browser"),
    "mongo": ("coordinator.mongo", "start, stop or check the embedded MongoDB (background)"),
}

EXAMPLES = """
examples:
  strix launch --model convstrix --local-workers 2 --max-evals 4 --image-size 32
  strix worker --mongo mongodb://strix:***@db:27017/?authSource=admin
  strix results --exp-key convstrix-32px --state failed
  strix final --exp-key convstrix-32px
  strix CMD --help            # the options of one command
"""


def build_parser() -> Parser:
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    return Parser(
        prog="strix",
        description="Distributed hyper-parameter tuning of Keras CNNs.\n\ncommands:\n" + listing,
        epilog=EXAMPLES,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
        usage="strix COMMAND [options]",
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose one of: {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
