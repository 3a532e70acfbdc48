"""hyperopt's ``MongoWorker`` and its command-line helpers, on Strix's store.

Same names and signatures as ``hyperopt.mongoexp``, so a script that drives workers
itself changes only its import. Two differences, both on purpose: the Domain is loaded
by Strix's restricted unpickler (a worker runs installed code only; pass
``allow_modules`` for your objective's package), and jobs whose ``cmd`` protocol is not
``domain_attachment`` (what ``fmin`` posts) are marked ERROR instead of importing or
unpickling code named in the database. A refused job is marked ERROR and ``run_one``
returns (it does not raise), so ``fmin`` ends and a loop calling ``run_one`` goes on.
``strix-worker`` is the full worker: resident, GPU-packing, heartbeating; this module is
the minimal hyperopt-compatible one.
"""

from __future__ import annotations

import logging
import optparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

from hyperopt import mongoexp
from hyperopt.base import SONify, spec_from_misc
from hyperopt.mongoexp import ReserveTimeout, Shutdown, as_mongo_str, parse_url
from hyperopt.utils import temp_dir, working_dir

from shared.domain import load_domain
from shared.errors import JobError
from shared.store.hyperopt.mongojobs import MongoJobs
from shared.store.hyperopt.trials import MongoTrials
from shared.store.reads import State

log = logging.getLogger(__name__)


class MongoWorker(mongoexp.MongoWorker):
    """Reserve one job, evaluate it, store the result: hyperopt's ``run_one``."""

    def __init__(
        self,
        mj: MongoJobs,
        poll_interval: float = 3.0,
        workdir: str | None = None,
        exp_key: str | None = None,
        logfilename: str | None = "logfile.txt",
        *,
        allow_modules: Iterable[str] = (),
    ) -> None:
        super().__init__(mj, poll_interval, workdir, exp_key, logfilename)
        self.allow_modules = tuple(allow_modules)

    def _reserve(self, host_id: Any, reserve_timeout: float | None) -> dict:
        start = time.time()
        while True:
            job = self.mj.reserve(host_id, exp_key=self.exp_key)
            if job:
                return job
            if reserve_timeout and time.time() - start > reserve_timeout:
                raise ReserveTimeout()
            time.sleep(1 + float(os.urandom(1)[0]) / 255 * max(float(self.poll_interval) - 1, 0))

    def _workdir(self, job: dict) -> str:
        """Its own workdir, else ``<misc.workdir or cwd>/<job id>``: a path the database
        chooses, so it is taken only inside the current directory."""
        if self.workdir is not None:
            return os.path.abspath(os.path.expanduser(self.workdir))
        given = job["misc"].get("workdir")
        root = os.path.realpath(os.getcwd())
        workdir = os.path.realpath(os.path.join(root, str(given or "."), str(job["_id"])))
        if os.path.commonpath([root, workdir]) != root:
            raise JobError(
                f"refusing the trial's workdir {given}: this worker runs trials only under its "
                f"current directory {root}; start it where that directory is, or pass workdir="
            )
        return workdir

    def _worker_fn(self, job: dict, ctrl: mongoexp.MongoCtrl) -> Any:
        protocol, name = job["misc"]["cmd"][:2]
        if protocol != "domain_attachment":
            raise JobError(f"cmd protocol {protocol!r} is not run by Strix; post with fmin")
        return load_domain(ctrl.trials.attachments[name], self.allow_modules).evaluate

    def run_one(
        self,
        host_id: Any = None,
        reserve_timeout: float | None = None,
        erase_created_workdir: bool = False,
    ) -> None:
        host_id = host_id or f"{socket.gethostname()}:{os.getpid()}"
        job = self._reserve(host_id, reserve_timeout)
        trials = MongoTrials(self.mj, exp_key=job["exp_key"], refresh=False)
        ctrl = mongoexp.MongoCtrl(trials=trials, read_only=False, current_trial=job)
        try:
            fn, workdir = self._worker_fn(job, ctrl), self._workdir(job)
        except JobError as e:  # refused code, space or path: ERROR now, the caller's loop goes on
            log.error("job %s refused: %s", job.get("tid"), e)
            self.mj.update(job, {"state": State.ERROR, "error": (str(JobError), str(e))})
            return
        handler = logging.FileHandler(self.logfilename) if self.logfilename else None
        if handler:
            logging.getLogger().addHandler(handler)
        try:
            with temp_dir(workdir, erase_created_workdir), working_dir(workdir):
                result = SONify(fn(spec_from_misc(job["misc"]), ctrl))
        except BaseException as e:
            log.info("job exception: %s", e)
            ctrl.checkpoint()
            self.mj.update(job, {"state": State.ERROR, "error": (str(type(e)), str(e))})
            raise
        finally:
            if handler:
                logging.getLogger().removeHandler(handler)
        for aname, aval in result.pop("attachments", {}).items():
            ctrl.attachments[aname] = aval
        ctrl.checkpoint(result)
        self.mj.update(job, {"state": State.DONE})


def _connect(options: Any) -> MongoJobs:
    url = as_mongo_str(options.mongo)
    return MongoJobs.new_from_connection_str(url if url.count("/") > 3 else url + "/jobs")


def _run_one(options: Any, inline: bool) -> int:
    """One job, in this process or (hyperopt's default) in a fresh subprocess."""
    if inline:
        worker = MongoWorker(
            _connect(options), float(options.poll_interval), options.workdir, options.exp_key
        )
        try:
            worker.run_one(reserve_timeout=float(options.reserve_timeout))
        except (ReserveTimeout, Exception) as e:
            log.warning("job failed: %s: %s", type(e).__name__, e)
            return 1
        return 0
    argv = [sys.executable, "-m", "shared.store.hyperopt.mongoworker", "--max-jobs=1"]
    argv += [f"--mongo={options.mongo}", f"--poll-interval={options.poll_interval}"]
    argv += [f"--reserve-timeout={options.reserve_timeout}"]
    argv += [f"--workdir={options.workdir}"] if options.workdir else []
    argv += [f"--exp-key={options.exp_key}"] if options.exp_key else []
    return subprocess.call(argv)


def _shutdown(signum: int, frame: Any) -> None:
    raise Shutdown(signum)


def main_worker_helper(options: Any, args: Any) -> int:
    """Run up to ``options.max_jobs`` jobs, as hyperopt's helper of the same name."""
    n = int(options.max_jobs)
    if n <= 0:
        raise ValueError("N <= 0")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _shutdown)
    timeout = options.last_job_timeout
    end = None if timeout is None else time.time() + float(timeout)
    errors = 0
    while n and errors < int(options.max_consecutive_failures):
        if end and time.time() > end:
            log.info("Exiting due to last_job_timeout")
            return 0
        limit = int(getattr(options, "max_jobs_in_db", sys.maxsize))
        if limit != sys.maxsize and len(_connect(options)) >= limit:
            log.info("Exiting: the database holds %d or more jobs", limit)
            return 0
        try:
            code = _run_one(options, inline=n == 1 or not options.use_subprocesses)
        except Shutdown:
            return 0
        errors = errors + 1 if code else 0
        n -= 1
    log.info("exiting with N=%i after %i consecutive exceptions", n, errors)
    return 0


def main_worker() -> int | None:
    """``hyperopt-mongo-worker``'s option parser and loop (``strix-worker`` takes these too)."""
    p = optparse.OptionParser(usage="%prog [options]")
    p.add_option("--exp-key", dest="exp_key", default=None)
    p.add_option("--last-job-timeout", dest="last_job_timeout", default=None)
    p.add_option("--max-consecutive-failures", dest="max_consecutive_failures", default=4)
    p.add_option("--max-jobs", dest="max_jobs", default=sys.maxsize)
    p.add_option("--mongo", dest="mongo", default="localhost/hyperopt")
    p.add_option("--poll-interval", dest="poll_interval", default=5)
    p.add_option("--reserve-timeout", dest="reserve_timeout", default=120.0)
    p.add_option("--workdir", dest="workdir", default=None)
    p.add_option("--no-subprocesses", dest="use_subprocesses", default=True, action="store_false")
    p.add_option("--max-jobs-in-db", dest="max_jobs_in_db", default=sys.maxsize)
    options, args = p.parse_args()
    if args:
        p.print_help()
        return -1
    return main_worker_helper(options, args)


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    sys.exit(main_worker())


__all__ = ["MongoWorker", "as_mongo_str", "main", "main_worker", "main_worker_helper", "parse_url"]

if __name__ == "__main__":
    main()
