"""``python -m bench.faults.checkpoint_cost``: what checkpointing adds to a trial's wall time.

For each model and image size it trains one seeded trial (params drawn from the model's
search space with a fixed seed) through the worker's own vault into GridFS on an embedded
server, and reads from the trial's result how many checkpoints it saved and the seconds
they took (capture, encoding and the store write: the training thread waits for all of
it). Saves run after every epoch and every ``--checkpoint-every`` minutes inside one, so
the overhead of the default setting is ``save seconds / epoch seconds`` plus
``save seconds / 300`` for epochs longer than 5 minutes. It prints the overhead as
measured on the ``--limit`` images used, and projected to a full Fashion-MNIST epoch
(48,000 training images), where the same save is spread over a longer epoch.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench._common import fmt, local_data_dir, machine, make_parser, setup_logging, table

log = logging.getLogger(__name__)

EXAMPLES = """
  python -m bench.faults.checkpoint_cost                        # baseline, simplecnn, convstrix
  python -m bench.faults.checkpoint_cost --models convstrix:64 vggstrix:32 --limit 600
"""
FULL_TRAIN = 48_000  # Fashion-MNIST training images at the default validation split
INTERVAL_S = 300.0  # --checkpoint-every's default, 5 minutes


def _params(model: str, image_size: int, seed: int) -> dict:
    """Concrete params drawn from the model's search space with a fixed seed (a learning
    rate that trains: a diverged trial would stop early and save fewer checkpoints)."""
    import numpy as np
    from hyperopt.pyll import stochastic

    from shared.spaces import SPACES

    space = SPACES[model](image_size=image_size, clamp=True)
    params = stochastic.sample(space, rng=np.random.default_rng(seed))
    return {**params, "learning_rate": 1e-3, "lr_decay": None}


def measure(store: Any, model: str, size: int, args: Any, tid: int) -> dict:
    """One trial with checkpoints into GridFS; its cost figures."""
    from shared.catalog import entry
    from shared.data.cache import load
    from shared.data.spec import DataSpec
    from shared.training.loop import Budget, run_trial
    from worker.vault import StoreVault

    spec = DataSpec(image_size=size, channels=entry(model).channels, limit=args.limit)
    data = load(spec, data_dir=args.data_dir, cache_dir=args.cache_dir)
    job = _running_job(store, tid)
    cfg = SimpleNamespace(checkpoint_dir=None, keep_best=0, checkpoint_every=INTERVAL_S / 60)
    vault = StoreVault(store, job, "bench", cfg)  # type: ignore[arg-type]
    budget = Budget(max_epochs=args.epochs, patience=args.epochs)
    params = _params(model, size, args.seed)
    result = run_trial(model, params, data=data, budget=budget, seed=args.seed, vault=vault)
    pointer = store.trials_in("cost", tids=[tid])[0].get("checkpoint") or {}
    saves, save_s = int(result.get("checkpoints", 0)), float(result.get("checkpoint_seconds", 0))
    epoch_s = (float(result["train_seconds"]) - save_s) / max(1, int(result["epochs"]))
    per_save = save_s / max(1, saves)
    full_epoch = epoch_s * FULL_TRAIN / len(data.x_train)
    return {
        "model": model,
        "px": size,
        "params": result.get("params_count"),
        "ckpt_MB": fmt(pointer.get("bytes", 0) / 1e6, 3),
        "save_s": fmt(per_save, 3),
        "epoch_s": fmt(epoch_s, 2),
        "overhead_here_%": fmt(100 * save_s / max(1e-9, epoch_s * int(result["epochs"])), 2),
        "full_epoch_s": fmt(full_epoch, 1),
        "overhead_full_%": fmt(100 * per_save * (1 / full_epoch + 1 / INTERVAL_S), 2),
        "status": result.get("status"),
    }


def _running_job(store: Any, tid: int) -> dict:
    """A RUNNING job owned by "bench", posted with hyperopt's own document layout."""
    trials = store.trials("cost", refresh=False)
    misc = {"tid": tid, "cmd": ("domain_attachment", "FMinIter_Domain"), "workdir": None}
    misc.update({"idxs": {}, "vals": {}})
    trials.insert_trial_docs(trials.new_trial_docs([tid], [None], [{"status": "new"}], [misc]))
    job = store.reserve("bench", "cost", ["light"])
    assert job is not None and job["tid"] == tid
    return job


def build_parser() -> Any:
    p = make_parser("python -m bench.faults.checkpoint_cost", __doc__.splitlines()[0], EXAMPLES)
    p.add_argument(
        "--models",
        nargs="+",
        default=["baseline:28", "simplecnn:28", "convstrix:28", "convstrix:64"],
        help="MODEL:PX pairs",
    )
    p.add_argument("--limit", type=int, default=3000, help="Fashion-MNIST images used")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--data-dir",
        default=local_data_dir(),
        help="Fashion-MNIST idx directory (default: ../shared/data/fashion-mnist if present)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from shared.store import connect
    from shared.store.embedded import free_port, start_embedded

    print(f"machine: {machine()}; load average {os.getloadavg()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="strix-ckpt-cost-") as tmp:
        args.cache_dir = str(Path(tmp) / "cache")
        server = start_embedded(Path(tmp) / "nx", port=free_port())
        store = connect(server.url, "cost")
        try:
            for i, pair in enumerate(args.models):
                model, _, px = pair.partition(":")
                rows.append(measure(store, model, int(px or 28), args, tid=i))
                print(rows[-1], flush=True)
        finally:
            store.close()
            server.stop()
    print(table(rows))
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
