"""``strix-worker`` / ``strix worker`` / ``python -m worker``: a GPU-pinned, resident
hyperopt worker.

Signals, as rq handles them: the first SIGTERM/SIGINT is a preemption notice: the worker
stops taking trials, the running trial saves a checkpoint at its next batch, goes back to
the queue (NEW, not ERROR; a preemption does not count against ``--max-attempts``) and
the worker exits 0; whichever worker reserves the trial next resumes it there. A second
signal kills and reaps the ``--isolate`` trial process, if any, and exits at once; the
expired heartbeat then lets the reaper requeue the trial (a crash: it counts as an
attempt) and it resumes from its last checkpoint.

Exit codes: 0 stopped as asked (a signal, ``--max-jobs``, ``--reserve-timeout``...), 1 gave
up after ``--max-consecutive-failures`` failed trials in a row (a supervisor must see that),
2 a configuration it refused.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal

from shared.config import cli
from shared.training import backend
from worker import gpus
from worker.config import build_parser, resolve

log = logging.getLogger("worker")


def _install_signals(worker: object) -> None:
    def handler(signum: int, frame: object) -> None:
        if worker.stop_requested.is_set():  # type: ignore[attr-defined]
            log.warning("second signal: exiting now; the trial will be requeued by the reaper")
            worker.kill_child()  # type: ignore[attr-defined]
            os._exit(1)
        log.warning(
            "signal %d: checkpointing and requeueing the trial; again to force",
            signum,
        )
        worker.request_stop()  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    backend.select(cfg.backend)  # before anything imports Keras
    inventory = gpus.detect(cfg.fake_gpus, cfg.gpus)
    forced = gpus.forced_gpu(inventory, cfg.gpu)
    from shared.store import connect  # pymongo only; TF is not imported yet

    store = connect(cfg.mongo, cfg.db)
    from worker.runner import Worker

    worker = Worker(cfg, store, inventory, forced)
    _install_signals(worker)
    return worker.run()


def main(argv: list[str] | None = None) -> int:
    return cli.main("strix-worker", build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
