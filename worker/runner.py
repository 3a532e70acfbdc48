"""The resident worker: bootstrap, loop, teardown (as rq does it).

One process keeps TensorFlow and the prepared dataset loaded across trials. Between
trials it reaps dead workers' jobs, then reserves the oldest queued trial that fits its
GPU's free capacity: light trials share a GPU, a heavy one needs the GPU to itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import signal
import threading
import time
import uuid
from dataclasses import asdict
from typing import Any

from shared.domain import is_strix, load_domain
from shared.errors import JobError, StoreError, StoreUnavailable
from shared.store import Store
from shared.training import backend, jobs
from shared.training.jobs import JobConfig, Outcome, RunContext, parse_config, run_context, runner
from worker import pruner, vault
from worker.config import WorkerConfig
from worker.gpus import Inventory, pin
from worker.heartbeat import Heartbeat
from worker.tenure import Active, Tenure, lease_deadline

log = logging.getLogger(__name__)
DOMAIN = "FMinIter_Domain"


class Worker:
    def __init__(
        self, cfg: WorkerConfig, store: Store, inventory: Inventory, forced: int | None = None
    ):
        self.cfg, self.store, self.inventory, self.forced = cfg, store, inventory, forced
        self.gpu: int | None = None
        # host and pid for people; the uuid4 for uniqueness (compose workers share a host
        # name and all run as pid 1)
        self.id = f"{cfg.host}:{os.getpid()}:{uuid.uuid4().hex}"
        self.stop_requested = threading.Event()  # first signal: take no more trials
        self.trial_stop = threading.Event()  # tells the running trial to end now
        self.tenure = Tenure(self.trial_stop, self.stop_requested)
        self.jobs_run = 0
        self.failures = 0
        self.gave_up = False  # stopped after too many failures in a row: exit non-zero
        self._domains: dict[str, Any] = {}
        self._data: dict[Any, Any] = {}
        self._last_reap = 0.0
        self.child: Any = None  # the --isolate process of the running trial
        self.trial_vault: vault.StoreVault | None = None  # the running trial's checkpoints
        t = self.tenure
        self.heartbeat = Heartbeat(cfg.heartbeat, self._beat, t.lose, t.left, t.expire)

    @property
    def current(self) -> Active | None:
        return self.tenure.current

    # --- lifecycle -----------------------------------------------------------------------
    def run(self) -> int:
        self.bootstrap()
        try:
            self.loop()
        finally:
            self.teardown()
        return 1 if self.gave_up else 0

    def bootstrap(self) -> None:
        indices = list(self.inventory.indices)
        if indices:
            self.store.register_gpus(self.cfg.host, indices, self.cfg.gpu_capacity)
            self.gpu = self.store.claim_slot(
                self.cfg.host, indices, self.id, self.cfg.grace, forced=self.forced
            )
        pin(self.gpu, self.inventory)  # before the first trial imports TensorFlow
        from shared.data.cache import sweep_stale

        sweep_stale(self.cfg.cache_dir)  # a SIGKILL mid-build leaves temp dirs of up to 1 GB
        self.heartbeat.start()
        where = "CPU" if self.gpu is None else f"GPU {self.gpu}"
        log.info("worker %s ready on %s (store %s)", self.id, where, self.store.target.redacted)

    def teardown(self) -> None:
        self.heartbeat.stop()
        if self.gpu is not None:
            try:
                self.store.release(self.cfg.host, self.gpu, self.id)
            except StoreError as e:
                log.warning("could not release GPU slot: %s (it expires by itself)", e)
        log.info("worker %s stopped after %d trial(s)", self.id, self.jobs_run)

    def request_stop(self) -> None:
        self.stop_requested.set()
        self.trial_stop.set()

    def loop(self) -> None:
        started = idle_since = time.monotonic()
        delay = self.cfg.poll_floor
        while not self.stop_requested.is_set() and not self._limits_reached(started):
            got = self._next_job()
            if got is None:
                if (
                    self.cfg.reserve_timeout
                    and time.monotonic() - idle_since > self.cfg.reserve_timeout
                ):
                    log.info("no trial for %.0fs: exiting", self.cfg.reserve_timeout)
                    return
                self.stop_requested.wait(delay)
                delay = min(delay * 2, self.cfg.poll_cap)
                continue
            self.run_job(got)
            idle_since, delay = time.monotonic(), self.cfg.poll_floor

    def _limits_reached(self, started: float) -> bool:
        cfg = self.cfg
        if cfg.max_jobs is not None and self.jobs_run >= cfg.max_jobs:
            return True
        if cfg.last_job_timeout and time.monotonic() - started > cfg.last_job_timeout:
            return True
        if self.failures >= cfg.max_consecutive_failures:
            log.error("%d trials failed in a row: exiting with code 1", self.failures)
            self.gave_up = True
            return True
        if cfg.max_jobs_in_db is not None:
            held = sum((self._safe(self.store.counts) or {}).values())
            if held >= cfg.max_jobs_in_db:
                log.info("the database holds %d jobs (--max-jobs-in-db): exiting", held)
                return True
        return False

    # --- reservation -------------------------------------------------------------------
    def _cost(self, resource: str) -> int:
        return self.cfg.gpu_capacity if resource == "heavy" else 1

    def _next_job(self) -> Active | None:
        try:
            self._maybe_reap()
            return self._reserve()
        except StoreError as e:
            log.warning("cannot reserve a trial: %s", e)
            return None

    def _maybe_reap(self) -> None:
        if time.monotonic() - self._last_reap >= self.cfg.heartbeat:
            self._last_reap = time.monotonic()
            self.store.reap(self.cfg.max_attempts)  # by each holder's grace, server time

    def _reserve(self) -> Active | None:
        allowed = ["light", "heavy"]
        if self.gpu is not None:
            used = self.store.gpu_usage(self.cfg.host, self.gpu)
            allowed = [r for r in allowed if used + self._cost(r) <= self.cfg.gpu_capacity]
        resource = self.store.peek_resource(self.cfg.exp_key, allowed) if allowed else None
        if resource is None:
            return None
        holder = None
        if self.gpu is not None:
            holder = f"{self.id}/{secrets.token_hex(3)}"
            cap, ttl = self.cfg.gpu_capacity, self.cfg.grace
            units = self._cost(resource)
            if not self.store.acquire(self.cfg.host, self.gpu, holder, units, cap, ttl):
                return None
        sent = time.monotonic()
        job = self.store.reserve(self.id, self.cfg.exp_key, [resource], self.cfg.grace)
        if job is None and holder is not None:
            self.store.release(self.cfg.host, self.gpu, holder)
        return None if job is None else Active(job, holder, lease_deadline(sent, self.cfg.grace))

    # --- heartbeat -----------------------------------------------------------------------
    def _beat(self) -> Active | None:
        """Renew this worker's leases; the run found no longer ours, if any."""
        active = self.current
        ours, sent = True, time.monotonic()
        if active is not None:
            ours = self.store.heartbeat(active.job, self.id, self.cfg.grace)
            self.tenure.renewed(active, sent, self.cfg.grace)
        if self.gpu is not None:
            holder = active.holder if active else None
            self.store.renew(self.cfg.host, self.gpu, self.id, holder, self.cfg.grace)
        return None if ours else active

    # --- one trial -----------------------------------------------------------------------
    def run_job(self, active: Active) -> None:
        job = active.job
        self.tenure.begin(active)
        self.trial_vault = None
        log.info("trial %s of %s started", job.get("tid"), job.get("exp_key"))
        began = time.monotonic()
        try:
            try:
                outcome = self._evaluate_isolated(job) if self.cfg.isolate else self._evaluate(job)
            finally:
                if active.holder is not None:
                    self._safe(self.store.release, self.cfg.host, self.gpu, active.holder)
            took = time.monotonic() - began
            log.info("trial %s ended (%s after %.1fs)", job.get("tid"), outcome[0].value, took)
            active.finishing = True  # the lease is still renewed while the outcome is stored
            self._record(active, outcome)
        finally:
            self.tenure.end()

    def _evaluate(self, job: dict) -> tuple[Outcome, Any]:
        """Returns (kind, payload): ok/result, fail/result, error/reason or stopped/None."""
        try:
            domain, spec, config = self._config_retrying(job)
        except JobError as e:
            return Outcome.ERROR, str(e)
        except StoreError as e:
            log.warning("store unavailable at trial start (%s); giving the trial back", e)
            return Outcome.STOPPED, "store unavailable at trial start"
        shown = None if config is None else asdict(config)
        self._safe(self.store.set_fields, job, self.id, {"spec": shown, "worker": self._info()})
        try:
            if is_strix(domain):
                result = self._run_strix(domain, job, config)
            else:
                result = self._run_foreign(domain, job, spec)
        except Exception as e:
            if self.trial_stop.is_set():
                return Outcome.STOPPED, None
            log.exception("trial %s raised", job.get("tid"))
            return Outcome.ERROR, f"{type(e).__name__}: {e}"
        if self.trial_stop.is_set() and self.trial_vault is None:  # cut short: not a result
            return Outcome.STOPPED, None
        return (Outcome.OK if result.get("status") == "ok" else Outcome.FAILED), result

    def _run_strix(self, domain: Any, job: dict, config: JobConfig) -> dict:
        """Strix's objectives run on the trial config evaluated and validated in _config."""
        self.trial_vault = vault.for_job(self.store, job, self.id, self.cfg, config.model)
        ctx = RunContext(
            on_epoch=lambda epoch, row: self._epoch(job, epoch, row),
            judge=pruner.for_job(self.store, job, config.pruner, self.id),
            load_data=self._load_data,
            stop=self.trial_stop,
            job=job,
            weights_dir=self.cfg.weights_dir,
            cache_dir=self.cfg.cache_dir,
            work_dir=self._work_dir(),
            vault=self.trial_vault,
        )
        if config.model != "toy":
            backend.load_quietly()  # the first Keras trial imports TensorFlow: without its noise
            if self.cfg.precision != "float32":
                backend.set_precision(self.cfg.precision)
        with run_context(ctx):
            return runner(domain.fn)(config)

    def _run_foreign(self, domain: Any, job: dict, spec: dict) -> dict:
        """An objective from an --allow-module package, called as hyperopt's worker would."""
        ctrl = self.store.ctrl(job)
        result = dict(domain.evaluate(spec, ctrl))
        for name, blob in result.pop("attachments", {}).items():
            ctrl.attachments[name] = blob
        return result

    def _evaluate_isolated(self, job: dict) -> tuple[Outcome, Any]:
        """``--isolate``: the same evaluation in a fresh spawned process, killed on stop."""
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_isolated, args=(self.cfg, self.id, self.gpu, job, child))
        proc.start()
        self.child = proc
        child.close()
        log.info("trial %s runs in child process %s", job.get("tid"), proc.pid)
        try:
            while not parent.poll(0.2):
                if self.trial_stop.is_set() and proc.is_alive():
                    return self._stop_child(proc, parent)
                if not proc.is_alive():
                    if self.trial_stop.is_set():
                        return Outcome.STOPPED, None
                    return Outcome.ERROR, f"isolated trial process died with code {proc.exitcode}"
            return parent.recv()
        finally:
            proc.join(10)
            self.child = None

    def _stop_child(self, proc: Any, conn: Any) -> tuple[Outcome, Any]:
        """SIGTERM the child (it checkpoints at its next batch); killed after the grace."""
        proc.terminate()
        proc.join(self.cfg.grace)
        if proc.is_alive():
            proc.kill()
        return Outcome.STOPPED, None

    def kill_child(self) -> None:
        """The second signal: kill the --isolate child and reap it, as rq kills its horse."""
        proc = self.child
        if proc is not None and proc.is_alive():
            log.warning("killing trial process %s", proc.pid)
            proc.kill()
            proc.join(5)

    def _record(self, active: Active, outcome: tuple[Outcome, Any]) -> None:
        job, (kind, payload) = active.job, outcome
        tid = job.get("tid")
        if active.lost:
            self._taken_over(job)
            return
        if kind is Outcome.STOPPED:
            reason = payload or "worker stopped by signal"
            if active.fenced:
                reason = "its worker's lease ran out during a store outage"
            back = self._safe(self.store.requeue, job, self.id, reason, retry_s=self.cfg.grace)
            if back:
                log.info("trial %s put back in the queue (%s)", tid, reason)
            elif back is False:
                self._taken_over(job)
            return
        if kind is Outcome.ERROR:
            result, error = {"status": "fail", "reason": payload}, payload
        else:
            result, error = payload, None
        stored = self._safe(self.store.finish, job, self.id, result, error, retry_s=self.cfg.grace)
        if stored is False:
            self._taken_over(job)
            return
        if stored is None:
            return  # the store stayed down: the reaper requeues the trial
        if vault.left_any(self.cfg, job, self.trial_vault):
            self._safe(self.store.clear_checkpoint, job, self.id, self.cfg.checkpoint_dir)
        self.jobs_run += 1
        self.failures = 0 if kind is Outcome.OK else self.failures + 1
        if error:
            log.error("trial %s marked ERROR: %s", tid, error)
        else:
            log.info("trial %s %s: loss=%s", tid, result.get("status"), result.get("loss"))

    def _taken_over(self, job: dict) -> None:
        owner = self._safe(self.store.owner, job) or "another worker"
        log.warning(
            "trial %s was taken over by %s; this worker's result was dropped", job.get("tid"), owner
        )

    def _config_retrying(self, job: dict) -> tuple[Any, dict, Any]:
        """``_config`` through a short store outage (a restart), for up to the grace period."""
        deadline = time.monotonic() + self.cfg.grace
        while True:
            try:
                return self._config(job)
            except StoreUnavailable:
                if time.monotonic() >= deadline or self.trial_stop.is_set():
                    raise
                time.sleep(1.0)

    def _config(self, job: dict) -> tuple[Any, dict, Any]:
        from hyperopt import pyll
        from hyperopt.base import spec_from_misc

        try:
            blob = self.store.attachment(DOMAIN, job.get("exp_key"))
        except KeyError:
            raise JobError(f"study {job.get('exp_key')!r} has no {DOMAIN} attachment") from None
        key = hashlib.sha1(blob).hexdigest()
        if key not in self._domains:
            self._domains = {key: load_domain(blob, self.cfg.allow_modules)}
        domain = self._domains[key]
        try:
            spec = spec_from_misc(job["misc"])
            if not is_strix(domain):
                return domain, spec, None  # hyperopt evaluates a foreign space itself
            config = pyll.rec_eval(domain.expr, memo=domain.memo_from_config(spec))
        except Exception as e:
            raise JobError(f"trial spec cannot be evaluated: {type(e).__name__}: {e}") from None
        parsed = parse_config(config)  # garbled or other-version jobs fail here
        ctx = RunContext(job=job, weights_dir=self.cfg.weights_dir, work_dir=self._work_dir())
        jobs.trial_paths(parsed, ctx)  # a path outside this worker's directories: ERROR now
        return domain, spec, parsed

    def _work_dir(self) -> str | None:
        return None if self.cfg.workdir is None else str(self.cfg.workdir)

    def _load_data(self, spec: Any) -> Any:
        from shared.data.cache import load

        if spec not in self._data:
            self._data = {
                spec: load(spec, data_dir=self.cfg.data_dir, cache_dir=self.cfg.cache_dir)
            }
        return self._data[spec]

    def _epoch(self, job: dict, epoch: int, row: dict) -> None:
        """Progress and metrics of one epoch, owner-guarded; a refusal stops this run only."""
        if self._safe(self.store.record_epoch, job, self.id, epoch, row) is False:
            self.tenure.lose_job(job)

    def _info(self) -> dict:
        return {"id": self.id, "host": self.cfg.host, "pid": os.getpid(), "gpu": self.gpu}

    def _safe(self, fn: Any, *args: Any, retry_s: float = 0.0) -> Any:
        """Call a store write; with ``retry_s``, keep retrying through a store outage."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                return fn(*args)
            except StoreError as e:
                if time.monotonic() >= deadline:
                    log.warning("store write failed (%s); the reaper will requeue the trial", e)
                    return None
                time.sleep(1.0)


def _isolated(cfg: WorkerConfig, owner: str, gpu: int | None, job: dict, conn: Any) -> None:
    """Entry point of an ``--isolate`` child: evaluate one trial, send the outcome back."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    store = Store(cfg.mongo, cfg.db)
    worker = Worker(cfg, store, Inventory(()))
    worker.id, worker.gpu = owner, gpu
    # the parent's SIGTERM: save a checkpoint at the next batch, then return
    signal.signal(signal.SIGTERM, lambda *_: worker.trial_stop.set())
    conn.send(worker._evaluate(job))
    conn.close()
