"""Reproduce the seed papers' published rows with Strix and write docs/reproduction.md.

Every row runs through the project's own commands: ``strix train`` for one configuration
(``python -m coordinator.train``), ``strix launch`` + ``strix final`` for the two Part III
studies. Each run leaves ``result.json`` (or ``provenance.json``) in its folder under
``out/reproduce/``; a run whose file is there is not run again, so an interrupted
``--quick`` resumes, and the document is rewritten after every run, so what finished is
always in it. ``--quick`` is the set sized for a 2-core CPU (one hour at most; shorter
training than the papers', said in the document); ``--full`` is every row at the papers'
budget, sized for a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.reproduce.rows import BY_KEY, ROWS, Row
from shared.training.schedules import MONITORS

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "reproduce"
DOC = ROOT / "docs" / "reproduction.md"
WEIGHTS = Path(os.environ.get("STRIX_WEIGHTS_DIR") or ROOT.parent / "shared" / "weights")

EXAMPLES = """examples:
  python -m bench.reproduce --quick                     # the CPU set, ~1 h on 2 cores
  python -m bench.reproduce --quick --seeds 3 --rows s003-simplecnn-none
  python -m bench.reproduce --quick --seeds 3 --monitors val_loss,val_accuracy \
      --seed-rows s003-simplecnn-none --spread-limit 12000 --spread-long 30x6000 \
      --spread-long 40xall:val_loss \
      --seeds-at-budget s003-simplecnn-flip s003-simplecnn-flip+rot   # docs/reproduction.md
  python -m bench.reproduce --full --weights-dir ../shared/weights   # every row, on a GPU
  python -m bench.reproduce --quick --doc-only          # rewrite the doc from finished runs
"""


@dataclass(frozen=True)
class Budget:
    """How long each run trains; the quick one is what fits the CPU, said in the doc."""

    epochs: int
    patience: int
    limit: int | None = None


QUICK = Budget(epochs=10, patience=3)
FULL = Budget(epochs=50, patience=5)


@dataclass(frozen=True)
class Run:
    row: Row
    seed: int
    monitor: str
    budget: Budget
    out: Path = OUT

    @property
    def folder(self) -> Path:
        limit = f"-n{self.budget.limit}" if self.budget.limit else ""
        patience = f"-p{self.budget.patience}" if self.budget.patience != QUICK.patience else ""
        name = f"seed{self.seed}-{self.monitor}-e{self.budget.epochs}{limit}{patience}"
        return self.out / self.row.key / name

    def argv(self) -> list[str]:
        """``strix train``'s arguments for this run (a study row has its own commands)."""
        r, b = self.row, self.budget
        argv = ["--model", r.model, "--seed", str(self.seed), "--monitor", self.monitor]
        for k, v in r.sets.items():
            argv += ["--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}"]
        if r.image_size:
            argv += ["--image-size", str(r.image_size)]
        argv += ["--epochs", str(b.epochs), "--patience", str(b.patience)]
        if b.limit:
            argv += ["--limit", str(b.limit)]
        return argv

    def command(self) -> str:
        """What a user types to get this row's figure (the output folder left out)."""
        if self.row.study:
            return " && ".join(shlex.join(c) for c in study_commands(self))
        return shlex.join(["strix", "train", *self.argv()])


def study_commands(run: Run) -> list[list[str]]:
    """A Part III row: the 50-trial study, then the final retrain of its best trial."""
    r = run.row
    key = f"repro-{r.model}-{r.image_size}px-s{run.seed}"
    launch = ["strix", "launch", "--model", r.model, "--exp-key", key]
    launch += ["--max-evals", str(r.study), "--image-size", str(r.image_size)]
    launch += ["--seed", str(run.seed), "--max-epochs", str(run.budget.epochs)]
    launch += ["--local-workers", os.environ.get("STRIX_REPRO_WORKERS", "4")]
    folder = os.path.relpath(run.folder, ROOT)
    final = ["strix", "final", "--exp-key", key, "--no-store", "--out", folder]
    return [launch, final]


def result_file(run: Run) -> Path:
    return run.folder / ("provenance.json" if run.row.study else "result.json")


def execute(run: Run, log: Path, weights_dir: Path) -> dict | None:
    """Run one row through the project's command; its result, or None when it failed."""
    if result_file(run).is_file():
        return json.loads(result_file(run).read_text())
    run.folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    env["STRIX_WEIGHTS_DIR"] = str(weights_dir)  # the MobileNet rows' ImageNet file
    if run.row.study:
        commands = [[sys.executable, "-m", "coordinator.cli", *c[1:]] for c in study_commands(run)]
    else:
        out = ["--out", str(run.folder)]
        commands = [[sys.executable, "-m", "coordinator.train", *run.argv(), *out]]
    with log.open("a") as sink:
        for argv in commands:
            sink.write(f"\n$ {shlex.join(argv)}\n")
            sink.flush()
            done = subprocess.run(argv, cwd=ROOT, env=env, stdout=sink, stderr=sink)
            if done.returncode != 0:
                sink.write(f"exit {done.returncode}\n")
                return None
    return json.loads(result_file(run).read_text())


def plan(args: argparse.Namespace) -> list[Run]:
    """The runs in order: every row's first seed and monitor first, so the table fills
    early; extra seeds and monitors after."""
    budget = QUICK if args.quick else FULL
    budget = Budget(
        epochs=args.epochs or budget.epochs,
        patience=args.patience or budget.patience,
        limit=args.limit,
    )
    rows = (
        [BY_KEY[k] for k in args.rows] if args.rows else [r for r in ROWS if r.quick or args.full]
    )
    monitors = args.monitors.split(",")
    runs = [Run(r, 0, monitors[0], _row_budget(r, budget, args), args.out) for r in rows]
    extra_rows = [BY_KEY[k] for k in args.seed_rows] if args.seed_rows else rows
    spreads = [(Budget(budget.epochs, budget.patience, args.spread_limit or budget.limit), None)]
    spreads += [(Budget(e, args.spread_patience, n), m) for e, n, m in args.spread_long or []]
    for spread, only in spreads:
        for seed in range(args.seeds):
            for monitor in [only] if only else monitors:
                runs += [Run(r, seed, monitor, spread, args.out) for r in extra_rows if not r.study]
    for r in [BY_KEY[k] for k in args.seeds_at_budget or []]:
        budget_r = _row_budget(r, budget, args)
        runs += [Run(r, seed, monitors[0], budget_r, args.out) for seed in range(1, args.seeds)]
    unique: dict[Path, Run] = {}
    for run in runs:
        unique.setdefault(run.folder, run)
    return list(unique.values())


def _row_budget(row: Row, budget: Budget, args: argparse.Namespace) -> Budget:
    """The quick mode's tighter cut for the rows that need one, unless flags say otherwise."""
    if not args.quick or row.quick_budget is None or args.epochs or args.limit:
        return budget
    epochs, limit = row.quick_budget
    return Budget(epochs=epochs, patience=budget.patience, limit=limit)


def _epochs_images(text: str) -> tuple[int, int | None, str | None]:
    """``EPOCHSxIMAGES[:MONITOR]``; IMAGES ``all`` is the whole training set."""
    budget, _, monitor = text.partition(":")
    epochs, _, images = budget.partition("x")
    try:
        n = None if images == "all" else int(images)
        if monitor and monitor not in MONITORS:
            raise ValueError(monitor)
        return int(epochs), n, monitor or None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected EPOCHSxIMAGES[:MONITOR], e.g. 30x6000 or 40xall:val_loss"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.reproduce",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="the CPU set (about an hour)")
    mode.add_argument("--full", action="store_true", help="every row at the papers' budget (GPU)")
    rows = {"nargs": "+", "choices": sorted(BY_KEY), "metavar": "ROW"}  # row-list flags
    p.add_argument("--rows", **rows, help="only these")
    p.add_argument("--seeds", type=int, default=1, help="seeds per row (mean and spread)")
    p.add_argument(
        "--seed-rows", **rows, help="the rows that get the extra seeds and monitors (default: all)"
    )
    p.add_argument(
        "--seeds-at-budget",
        **rows,
        help="these rows also get --seeds seeds at the mode's own budget (first monitor)",
    )
    p.add_argument("--monitors", default="val_loss", help="comma list: val_loss,val_accuracy")
    p.add_argument("--epochs", type=int, help="override the mode's epochs budget")
    p.add_argument("--patience", type=int, help="override the mode's patience")
    p.add_argument("--limit", type=int, help="train+val on a stratified subset of N images")
    p.add_argument(
        "--spread-limit",
        type=int,
        metavar="N",
        help="the extra seeds' and monitors' runs on N images (default: --limit)",
    )
    p.add_argument(
        "--spread-long",
        type=_epochs_images,
        action="append",
        metavar="EPOCHSxN",
        help="also the extra seeds (and monitors, unless :MONITOR names one) at EPOCHS epochs "
        "on N images (e.g. 30x6000, 40xall:val_loss)",
    )
    p.add_argument("--spread-patience", type=int, default=5, help="patience of --spread-long")
    p.add_argument("--doc", type=Path, default=DOC, help="the document written")
    p.add_argument("--out", type=Path, default=OUT, help="the runs' folders")
    p.add_argument("--weights-dir", type=Path, default=WEIGHTS, help="the ImageNet weight files")
    p.add_argument("--doc-only", action="store_true", help="only rewrite the document")
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = plan(args)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = _meta(args, argv)
    results: dict[Path, dict] = {}
    for i, run in enumerate(runs, 1):
        if not args.doc_only:
            print(f"[{i}/{len(runs)}] {run.row.key} seed {run.seed} {run.monitor}", flush=True)
            found = execute(run, args.out / "reproduce.log", args.weights_dir)
        else:
            found = json.loads(result_file(run).read_text()) if result_file(run).is_file() else None
        if found is not None:
            results[run.folder] = found
        _write(args, runs, results, meta)
    print(f"{len(results)}/{len(runs)} runs done; wrote {args.doc}")
    return 0 if len(results) == len(runs) else 1


def _meta(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """When and on what the runs ran; ``--doc-only`` keeps what the run itself recorded."""
    from bench.reproduce.doc import hardware

    path = _meta_path(args)
    if args.doc_only and path.is_file():
        return json.loads(path.read_text())
    shown = [a for a in (argv or []) if a != "--doc-only"]
    meta = {"mode": "quick" if args.quick else "full", "hardware": hardware(), "argv": shown}
    meta["started"] = time.strftime("%Y-%m-%d %H:%M")
    return meta


def _meta_path(args: argparse.Namespace) -> Path:
    """One record per document: two docs written from one ``--out`` keep their own headers."""
    return args.out / f"meta-{args.doc.stem}.json"


def _write(args: argparse.Namespace, runs: list[Run], results: dict, meta: dict) -> None:
    from bench.reproduce.doc import hardware, write_doc

    if not args.doc_only:
        meta["hardware_end"] = hardware()
        _meta_path(args).write_text(json.dumps(meta, indent=2))
    write_doc(args.doc, runs, results, meta)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
