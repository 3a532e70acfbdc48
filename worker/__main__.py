"""``strix-worker`` / ``python -m worker``: a GPU-pinned, resident hyperopt worker.

Signals, as rq handles them: the first SIGTERM/SIGINT stops taking trials, puts the
running trial back in the queue (NEW, not ERROR) and exits 0; a second one exits at
once, and the expired heartbeat lets the reaper requeue the trial.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from shared.errors import StrixError
from worker import gpus
from worker.config import build_parser, resolve

log = logging.getLogger("worker")


def _install_signals(worker: object) -> None:
    def handler(signum: int, frame: object) -> None:
        if worker.stop_requested.is_set():  # type: ignore[attr-defined]
            log.warning("second signal: exiting now; the trial will be requeued by the reaper")
            os._exit(1)
        log.warning(
            "signal %d: finishing up (trial goes back to the queue); again to force", signum
        )
        worker.request_stop()  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = resolve(args)
        inventory = gpus.detect()
        forced = gpus.forced_gpu(inventory)
        from shared.store import connect  # pymongo only; TF is not imported yet

        store = connect(cfg.mongo, cfg.db)
        from worker.runner import Worker

        worker = Worker(cfg, store, inventory, forced)
        _install_signals(worker)
        return worker.run()
    except StrixError as e:
        print(f"strix-worker: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
