"""The worker process: ``python -m analysis.worker``.

Whenever one of its ``OPENFACE_PROCESSES`` OpenFace slots is free, the
worker takes what is waiting on the queue and starts a batch
(analysis/batch.py) in a thread of its own. The batch goes on taking the
messages that keep arriving, up to ``BATCH_MAX_MESSAGES``, and each job it
takes is claimed, planned and its media downloaded at once; it stops
gathering when all of them are ready and none came for
``GATHER_QUIET_SECONDS``, or after ``BATCH_WAIT_SECONDS``. A lone job on an
idle worker does not wait for company: it starts as soon as it is ready.
So jobs that arrive together share OpenFace's model load, and batches keep
every core busy.

Claiming a job makes its record the worker's: a token of its own as the
holder, one more attempt counted in the record. While a batch runs, a lease
keeps its messages invisible to other workers and a heartbeat in each long
job's record shows its holder alive. Each job is settled on its own, as soon
as its media are, and only by its holder: done, retried after a delay, or
after ``MAX_ATTEMPTS`` attempts failed with its result blobs saying why and
its message in the poison queue. On SIGTERM the running batches may finish
within ``WORKER_SHUTDOWN_GRACE_SECONDS``; after that they are stopped and
the jobs not yet settled are handed back, spending no attempt.

A message for a job still ``running`` whose holder fell silent means that
worker died: the job runs again alone (analysis/quarantine.py). A job whose
message was lost is found by the sweep (analysis/sweep.py).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import logging
import os
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from azure.core.exceptions import AzureError, ResourceNotFoundError

from analysis import workspace
from analysis.analyse import JobReport, write_failure
from analysis.backends import Backends
from analysis.batch import Batch, RetryLater
from analysis.config import DISK_FULL_DELAY_SECONDS, ConfigError, Settings, load_settings, retry_delay_seconds
from analysis.disk import DiskBudget
from analysis.inflight import InFlight
from analysis.job import InvalidTransition, Job, JobConflict, JobStatus, LeaseLost, now
from analysis import metrics
from analysis.lease import Lease
from analysis.logs import configure_logging, log_context
from analysis.openface import MIN_IMAGES_PER_PROCESS, OpenFaceCancelled, OpenFaceRunner, missing_executables
from analysis.parallel import THREADS
from analysis.queue import Delivery, JobQueue
from analysis.quarantine import Quarantine
from analysis.sweep import Sweeper
from analysis.engine import EngineError, EnginePool, engine_available
from analysis.sandbox import Sandbox, SandboxError

log = logging.getLogger("analysis.worker")

# While gathering, the batch looks for more messages this often; it stops when none came for QUIET.
GATHER_STEP_SECONDS = 0.05
GATHER_QUIET_SECONDS = 0.1
# A message delivered this many times MAX_ATTEMPTS goes to the poison queue, whatever its record says.
DELIVERIES_PER_ATTEMPT = 10


@dataclass
class Claim:
    """A job this worker runs: its record, its message, and the token that makes the record its own."""

    job: Job
    delivery: Delivery
    token: str


class Worker:
    def __init__(self, settings: Settings, backends: Backends, runner: OpenFaceRunner):
        self.settings = settings
        self.backends = backends
        self.runner = runner
        self.inflight = InFlight()  # blob versions its batches are analysing
        self.disk = DiskBudget(settings.disk_reserve_bytes)  # shared by its batches
        self.quarantine = Quarantine(backends.queue, settings.queue_visibility_seconds)
        self.sweeper = Sweeper(backends.jobs, backends.queue, settings.job_requeue_seconds,
                               settings.queue_visibility_seconds)
        self.stopping = threading.Event()  # take no new batch
        self.cancel = threading.Event()  # stop the running batches and hand them back
        self._found_empty = 0.0  # time.monotonic() of the latest receive that found the queue empty

    def request_stop(self, signum=None, frame=None) -> None:
        if self.stopping.is_set():
            self.cancel.set()  # a second signal: do not wait for the grace period
            return
        log.info("stopping: running batches may finish within %s s", self.settings.worker_shutdown_grace_seconds)
        self.stopping.set()
        timer = threading.Timer(self.settings.worker_shutdown_grace_seconds, self.cancel.set)
        timer.daemon = True
        timer.start()

    def queue_empty(self) -> bool:
        """Whether the queue was found empty a moment ago: nothing waits that the sweep could queue twice."""
        return time.monotonic() - self._found_empty < 2 * self.settings.worker_poll_seconds + 1

    def run(self, burst: bool = False) -> None:
        """Process batches until stopped; with ``burst``, until the queue is empty and all are done."""
        slots = self.runner.slots
        log.info("worker started", extra={"queue": self.settings.job_queue_name, "openface_processes": slots.count})
        # A batch waiting on another's blob holds no slot, so a few more batches than slots may run.
        most = 2 * slots.count
        with self.quarantine, ThreadPoolExecutor(most, thread_name_prefix="batch") as pool:
            self.sweeper.run(self.stopping, self.settings.job_sweep_seconds, self.queue_empty)
            running: set[Future] = set()
            alone: Future | None = None  # the quarantined job running now: one at a time
            while not self.stopping.is_set():
                running = {future for future in running if not future.done()}
                if len(running) == most or not slots.wait_for_free(self.settings.worker_poll_seconds):
                    wait(running, timeout=self.settings.worker_poll_seconds, return_when=FIRST_COMPLETED)
                    continue
                if alone is None or alone.done():
                    suspect = self.quarantine.next()
                    if suspect is not None:
                        alone = self._start(pool, running, [suspect], alone=True, quarantined=True)
                        continue
                try:
                    first = self.backends.queue.receive(self.settings.batch_max_messages,
                                                        self.settings.queue_visibility_seconds)
                except Exception:
                    log.exception("could not read the queue; retrying")
                    self.stopping.wait(self.settings.worker_poll_seconds * 5)
                    continue
                if not first:
                    self._found_empty = time.monotonic()
                    if burst and not running and not len(self.quarantine):
                        break
                    self.stopping.wait(self.settings.worker_poll_seconds)
                    continue
                # A lone job on an idle worker waits for no one.
                self._start(pool, running, first, alone=len(first) == 1 and not running)
        log.info("worker stopped")

    def _start(self, pool: ThreadPoolExecutor, running: set[Future], first: list[Delivery], alone: bool,
               quarantined: bool = False) -> Future:
        started = threading.Event()
        future = pool.submit(contextvars.copy_context().run, self._handle, first, started, alone, quarantined)
        running.add(future)
        # The batch gathers what arrives next; the worker takes more once it runs.
        while not started.wait(0.05) and not self.cancel.is_set():
            pass
        return future

    def _handle(self, first: list[Delivery], started: threading.Event, alone: bool, quarantined: bool) -> None:
        try:
            self.handle(first, started, alone, quarantined)
        except Exception:
            # The messages reappear after their visibility timeout and are retried.
            log.exception("unexpected error while handling a batch")
        finally:
            started.set()

    def handle(self, first: list[Delivery], started: threading.Event | None = None, alone: bool = False,
               quarantined: bool = False) -> None:
        """Gather a batch from ``first`` and what keeps arriving, run it, and settle each of its jobs.

        ``quarantined``: ``first`` is one job whose worker died while running it; it runs alone.
        """
        gathering = time.monotonic()
        held: dict[str, Claim] = {}  # the jobs claimed, until each is settled
        lock = threading.Lock()
        taken = 0

        def settle(job: Job, outcome: JobReport | RetryLater) -> None:
            with lock:
                claim = held.pop(job.job_id)
            claim.job = job
            self._settle(claim, lease, outcome, shared=len(batch.members) > 1)

        def admit(delivery: Delivery, order: int) -> None:
            nonlocal taken
            lease.hold(delivery)
            try:
                claim = self._claim(delivery, lease, quarantined)
            except Exception:
                log.exception("could not claim the job; its message comes back later",
                              extra={"job_id": delivery.job_id})
                lease.release(delivery, delay_seconds=self._retry_delay(1))
                return
            if claim is None:
                return
            with lock:
                held[claim.job.job_id] = claim
                taken += 1
            metrics.JOBS_IN_FLIGHT.inc()
            try:
                batch.add(claim.job, order)
            except Exception:  # never reported: retried once the batch is over
                log.exception("could not plan the job", extra={"job_id": claim.job.job_id})

        cancelled = False
        with Lease(self.backends.queue, [], self.settings.queue_visibility_seconds) as lease:
            with Batch(self.backends.store, self.runner, self.settings, self.inflight, self.cancel, started,
                       records=self.backends.jobs, on_done=settle, disk=self.disk) as batch:
                self._gather(first, admit, alone, batch, most=1 if quarantined else self.settings.batch_max_messages)
                if batch.members:
                    log.info("batch gathered", extra={"jobs": len(batch.members),
                                                      "gather_seconds": round(time.monotonic() - gathering, 3)})
                    metrics.BATCH_JOBS.observe(len(batch.members))
                    try:
                        batch.run()
                    except OpenFaceCancelled:
                        cancelled = True
            # The batch is over: the jobs it did not report go back to the queue.
            for claim in held.values():
                with log_context(job_id=claim.job.job_id, container=claim.job.container):
                    try:
                        if cancelled:
                            self._hand_back(claim, lease, "the worker shut down during the job")
                        else:
                            self._retry(claim, lease, "the worker could not publish its results", shared=taken > 1)
                    except InvalidTransition as exc:
                        log.warning("%s; leaving it to that one", exc)
        metrics.JOBS_IN_FLIGHT.dec(taken)

    def _gather(self, first: list[Delivery], admit, alone: bool, batch: Batch, most: int) -> None:
        """Admit ``first``, then the messages that keep arriving, until every job taken is ready.

        Gathering ends once nothing came for GATHER_QUIET_SECONDS (at once for
        a lone job; while another batch runs, once the batch is worth a process
        too), at ``most`` messages, or BATCH_WAIT_SECONDS after it began.
        """
        queue, settings = self.backends.queue, self.settings
        seen: set[str] = set()
        # Company only pays where every OpenFace run loads its models; warm engines need none.
        quiet = GATHER_QUIET_SECONDS if self.runner.pays_per_run and not alone else 0.0
        with ThreadPoolExecutor(THREADS, thread_name_prefix="admit") as pool:
            admitting: set[Future] = set()

            def take(deliveries: list[Delivery]) -> None:
                for delivery in deliveries:
                    if delivery.job_id in seen:
                        with log_context(job_id=delivery.job_id):
                            log.info("second message for a job in this batch; dropping it")
                        queue.complete(delivery)
                        continue
                    seen.add(delivery.job_id)
                    admitting.add(pool.submit(contextvars.copy_context().run, admit, delivery, len(seen)))

            take(first)
            taken = len(first)
            now = time.monotonic()
            deadline, last_arrival, next_look = now + settings.batch_wait_seconds, now, now + GATHER_STEP_SECONDS
            while taken < most and not self.stopping.is_set():
                admitting = {future for future in admitting if not future.done()}
                now = time.monotonic()
                if now >= deadline or (not admitting and now - last_arrival >= quiet and self._worth_starting(batch)):
                    break
                if now < next_look:  # one look at the queue per step, however often admissions finish
                    wait(admitting, timeout=next_look - now) if admitting else time.sleep(next_look - now)
                    continue
                next_look = now + GATHER_STEP_SECONDS
                more = queue.receive(most - taken, settings.queue_visibility_seconds)
                if more:
                    take(more)
                    taken, last_arrival = taken + len(more), time.monotonic()

    def _worth_starting(self, batch: Batch) -> bool:
        """While another batch runs OpenFace there is no hurry: a batch too small to pay for a
        process of its own waits for company (up to BATCH_WAIT_SECONDS) rather than take a slot."""
        slots = self.runner.slots
        if not self.runner.pays_per_run:
            return True
        return slots.free == slots.count or batch.worth_a_process(MIN_IMAGES_PER_PROCESS)

    def _claim(self, delivery: Delivery, lease: Lease, quarantined: bool = False) -> Claim | None:
        """The delivery's job, now running under a token of ours; None when there is nothing to run here."""
        jobs = self.backends.jobs
        job = _as_queued(delivery) or jobs.get(delivery.job_id)
        for _ in range(3):  # the record may change under us; look again
            with log_context(job_id=delivery.job_id, container=job.container if job else None):
                if job is None:
                    log.warning("no record for this job; dropping its message")
                    lease.complete(delivery)
                    return None
                if job.status.is_final:
                    log.info("job already %s; dropping duplicate message", job.status.value)
                    lease.complete(delivery)
                    return None
                if delivery.dequeue_count > DELIVERIES_PER_ATTEMPT * self.settings.max_attempts:
                    self._give_up(job, delivery, lease, job.error or f"its message was delivered "
                                  f"{delivery.dequeue_count} times without the job ending")
                    return None
                if job.status is JobStatus.RUNNING and not quarantined:
                    if time.time() - job.alive_at < self.settings.queue_visibility_seconds:
                        # Its holder is alive, and its lease lapsed: the holder settles it; look again later.
                        log.info("another worker runs this job; its message comes back later")
                        lease.release(delivery, delay_seconds=self.settings.queue_visibility_seconds)
                    else:
                        self.quarantine.admit(delivery, lease)
                    return None
                if job.status is JobStatus.RUNNING and job.attempts >= self.settings.max_attempts:
                    # Its worker died during every attempt, so no error was recorded.
                    self._give_up(job, delivery, lease, job.error or "the worker stopped during every attempt")
                    return None
                token = uuid.uuid4().hex
                try:
                    # From the record as queued, this write fails if the record changed since.
                    job = jobs.claim(job, token, attempts=job.attempts + 1, runs_alone=job.runs_alone or quarantined)
                except JobConflict:
                    job = jobs.get(delivery.job_id)
                    continue
                log.info("job started", extra={"attempt": job.attempts, "alone": job.runs_alone})
                return Claim(job, delivery, token)
        lease.release(delivery, delay_seconds=self._retry_delay(1))
        return None

    def _settle(self, claim: Claim, lease: Lease, outcome: JobReport | RetryLater, shared: bool) -> None:
        job = claim.job
        with log_context(job_id=job.job_id, container=job.container):
            try:
                if isinstance(outcome, RetryLater):
                    if outcome.spent:
                        self._retry(claim, lease, outcome.reason, shared)
                    else:
                        self._hand_back(claim, lease, outcome.reason, delay=DISK_FULL_DELAY_SECONDS)
                    return
                self.backends.jobs.move(
                    job, outcome.status, by=claim.token, results=outcome.results, outputs=outcome.outputs,
                    summary=outcome.summary, error=outcome.error, finished_at=now(), progress=None,
                )
                log.info("job %s", outcome.status.value, extra={"summary": outcome.summary, **outcome.steps})
                _count_finished(outcome.status, outcome.results)
            except LeaseLost as exc:  # this worker's lease lapsed and another took the job: theirs now
                log.warning("%s; leaving it to that one", exc)
            except InvalidTransition as exc:
                log.warning("%s; leaving it as it is", exc)  # another worker settled it first
            lease.complete(claim.delivery)

    def _retry(self, claim: Claim, lease: Lease, reason: str, shared: bool) -> None:
        job, reason = claim.job, _shorten(reason)
        if job.attempts >= self.settings.max_attempts:
            self._give_up(job, claim.delivery, lease, reason, token=claim.token)
            return
        delay = self._retry_delay(job.attempts)
        # After a failure in a shared run, the job runs alone, so a crash is pinned on its cause.
        self.backends.jobs.move(job, JobStatus.QUEUED, by=claim.token, holder=None, queued_at=now(),
                                runs_alone=job.runs_alone or shared, progress=None,
                                error=f"attempt {job.attempts} failed, will retry: {reason}")
        lease.release(claim.delivery, delay_seconds=delay)
        log.warning("job attempt failed; retrying in %s s: %s", delay, reason)

    def _hand_back(self, claim: Claim, lease: Lease, reason: str, delay: int = 0) -> None:
        """Back to the queue without spending an attempt: nothing went wrong with the job itself."""
        job = claim.job
        # results_before: it may have published some, which the next worker should find.
        self.backends.jobs.move(job, JobStatus.QUEUED, by=claim.token, holder=None, queued_at=now(),
                                attempts=max(0, job.attempts - 1), progress=None, results_before=True,
                                error=f"handed back: {reason}")
        lease.release(claim.delivery, delay_seconds=delay)
        log.info("job handed back: %s", reason, extra={"delay_seconds": delay})

    @staticmethod
    def _retry_delay(attempt: int) -> int:
        return retry_delay_seconds(attempt)

    def _give_up(self, job: Job, delivery: Delivery, letting_go: JobQueue | Lease, reason: str,
                 token: str | None = None) -> None:
        reason = f"gave up after {job.attempts} attempt{'' if job.attempts == 1 else 's'}: {reason}"
        try:
            report = write_failure(job, self.backends.store, reason)
            outputs, results = report.outputs, report.results
        except Exception:
            log.exception("could not write the failure result blobs")
            outputs, results = [], []
        self.backends.jobs.move(job, JobStatus.FAILED, by=token, error=reason, outputs=outputs,
                                results=results, finished_at=now(), progress=None)
        letting_go.dead_letter(delivery, reason)
        log.error("job moved to the poison queue: %s", reason)
        _count_finished(JobStatus.FAILED, results)


def _as_queued(delivery: Delivery) -> Job | None:
    """The job record the message carries, on its first delivery only: after that the record has moved on."""
    queued = delivery.queued
    if delivery.dequeue_count != 1 or not queued:
        return None
    try:
        job = Job.from_document(queued["record"], etag=queued["etag"])
    except (KeyError, TypeError, ValueError):
        return None
    return job if job.job_id == delivery.job_id else None


def _count_finished(status: JobStatus, results: list[dict]) -> None:
    metrics.JOBS_FINISHED.labels(status.value).inc()
    for result in results:
        if result["status"] != "skipped":  # not this job's media
            metrics.MEDIA.labels(result["status"]).inc()


def _shorten(text: str) -> str:
    return text if len(text) < 2000 else text[:2000] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run OpenFace analysis jobs from the queue.")
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--ready-file", type=Path, metavar="PATH",
                        help="write this file once the queues are ready and work can be taken")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    missing = missing_executables(settings.openface_bin_dir)
    if missing:
        print(f"worker: OPENFACE_BIN_DIR={settings.openface_bin_dir} lacks executable {', '.join(missing)}", file=sys.stderr)
        return 2
    if settings.openface_engine == "resident" and not engine_available(settings.openface_bin_dir):
        print(f"worker: OPENFACE_ENGINE=resident, but OPENFACE_BIN_DIR={settings.openface_bin_dir} has no "
              "executable openface-engine", file=sys.stderr)
        return 2
    try:
        sandbox = Sandbox.create(settings.openface_sandbox, settings.openface_env_passthrough,
                                 settings.openface_memory_limit_mb)
    except SandboxError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    workspace.sweep()  # job folders of workers that died before us
    backends = Backends(settings)
    try:
        backends.ensure() if settings.create_storage else backends.ping()
    except ResourceNotFoundError:
        print("worker: the job records container or queue is missing; the deployment creates them "
              "(CREATE_STORAGE=true creates them at start, for local runs)", file=sys.stderr)
        return 3
    except AzureError as exc:
        # The orchestrator restarts us; say why in one line rather than a traceback.
        print(f"worker: storage unreachable ({type(exc).__name__}): {str(exc).splitlines()[0]}", file=sys.stderr)
        return 3
    with contextlib.ExitStack() as stack:
        try:
            runner = choose_runner(settings, sandbox, stack)
        except EngineError as exc:
            print(f"worker: {exc}", file=sys.stderr)
            return 2
        if settings.metrics_port:
            metrics.serve_worker_metrics(settings.metrics_port, backends.queue)
        worker = Worker(settings, backends, runner)
        signal.signal(signal.SIGTERM, worker.request_stop)
        signal.signal(signal.SIGINT, worker.request_stop)
        if args.ready_file:
            args.ready_file.write_text(f"{os.getpid()}\n")
        worker.run(burst=args.burst)
    return 0


def choose_runner(settings: Settings, sandbox: Sandbox, stack: contextlib.ExitStack) -> OpenFaceRunner | EnginePool:
    """Warm engines when openface-engine is there (OPENFACE_ENGINE=auto) or asked for (resident), else the
    executables. Under ``auto`` an engine that cannot start leaves the executables to do the work."""
    cli = OpenFaceRunner.from_settings(settings, sandbox)
    if settings.openface_engine == "cli" or (settings.openface_engine == "auto"
                                             and not engine_available(settings.openface_bin_dir)):
        log.info("OpenFace runs as its executables", extra={"openface_engine": settings.openface_engine})
        return cli
    folder = stack.enter_context(workspace.workspace(prefix=workspace.ENGINES_PREFIX))
    sandbox.open_to(folder)
    pool = EnginePool(settings.openface_bin_dir, cli.limits, settings.openface_processes, sandbox, folder,
                      settings.engine_max_requests, settings.engine_max_rss_mb)
    try:
        pool.start()
    except EngineError:
        pool.stop()
        if settings.openface_engine == "resident":
            raise
        log.exception("the resident engine could not start; OpenFace runs as its executables")
        return cli
    stack.callback(pool.stop)
    log.info("OpenFace runs as resident engines", extra={"engines": settings.openface_processes,
                                                         **{k: pool.ready.get(k) for k in ("load_ms", "engine")}})
    return pool


if __name__ == "__main__":
    sys.exit(main())
