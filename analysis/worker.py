"""The worker process: ``python -m analysis.worker``.

Whenever one of its ``OPENFACE_PROCESSES`` OpenFace slots is free, the
worker takes every message waiting on the queue, up to
``BATCH_MAX_MESSAGES``, and runs their jobs as one batch (analysis/batch.py)
in a thread of its own, so jobs that arrive together share OpenFace's model
load and batches keep every core busy. A lone job is taken at once: the
worker never waits for a batch to fill. While a batch runs, a lease keeps all
its messages invisible to other workers. Each job is then settled on its
own: done, retried after a delay, or after ``MAX_ATTEMPTS`` deliveries
failed with its result blobs saying why and its message in the poison queue.
On SIGTERM the running batches may finish within
``WORKER_SHUTDOWN_GRACE_SECONDS``; after that they are stopped and handed back.
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from azure.core.exceptions import AzureError

from analysis import workspace
from analysis.analyse import JobReport, write_failure
from analysis.backends import Backends
from analysis.batch import Batch, RetryLater
from analysis.config import ConfigError, Settings, load_settings
from analysis.inflight import InFlight
from analysis.job import InvalidTransition, Job, JobStatus, now
from analysis import metrics
from analysis.lease import Lease
from analysis.logs import configure_logging, log_context
from analysis.openface import OpenFaceCancelled, OpenFaceRunner, missing_executables
from analysis.parallel import each
from analysis.queue import Delivery, JobQueue

log = logging.getLogger("analysis.worker")

# While filling a batch the worker looks for more this often, until none came for QUIET.
GATHER_STEP_SECONDS = 0.05
GATHER_QUIET_SECONDS = 0.25


class Worker:
    def __init__(self, settings: Settings, backends: Backends, runner: OpenFaceRunner):
        self.settings = settings
        self.backends = backends
        self.runner = runner
        self.inflight = InFlight()  # blob versions its batches are analysing
        self.stopping = threading.Event()  # take no new batch
        self.cancel = threading.Event()  # stop the running batches and hand them back

    def request_stop(self, signum=None, frame=None) -> None:
        if self.stopping.is_set():
            self.cancel.set()  # a second signal: do not wait for the grace period
            return
        log.info("stopping: running batches may finish within %s s", self.settings.worker_shutdown_grace_seconds)
        self.stopping.set()
        timer = threading.Timer(self.settings.worker_shutdown_grace_seconds, self.cancel.set)
        timer.daemon = True
        timer.start()

    def run(self, burst: bool = False) -> None:
        """Process batches until stopped; with ``burst``, until the queue is empty and all are done."""
        slots = self.runner.slots
        log.info("worker started", extra={"queue": self.settings.job_queue_name, "openface_processes": slots.count})
        # A batch waiting on another's blob holds no slot, so a few more batches than slots may run.
        most = 2 * slots.count
        with ThreadPoolExecutor(most, thread_name_prefix="batch") as pool:
            running: set[Future] = set()
            while not self.stopping.is_set():
                running = {future for future in running if not future.done()}
                if len(running) == most or not slots.wait_for_free(self.settings.worker_poll_seconds):
                    wait(running, timeout=self.settings.worker_poll_seconds, return_when=FIRST_COMPLETED)
                    continue
                try:
                    deliveries = self._take_batch(lone_allowed=not running)
                except Exception:
                    log.exception("could not read the queue; retrying")
                    self.stopping.wait(self.settings.worker_poll_seconds * 5)
                    continue
                if not deliveries:
                    if burst and not running:
                        break
                    self.stopping.wait(self.settings.worker_poll_seconds)
                    continue
                started = threading.Event()
                running.add(pool.submit(contextvars.copy_context().run, self._handle, deliveries, started))
                # The next batch is made of what arrives while this one gets going.
                while not started.wait(0.05) and not self.cancel.is_set():
                    pass
        log.info("worker stopped")

    def _take_batch(self, lone_allowed: bool) -> list[Delivery]:
        """What is waiting, and what keeps arriving behind it.

        A single message on an idle worker starts at once: a lone job never
        waits. Otherwise the worker takes messages for as long as they keep
        coming (until none came for GATHER_QUIET_SECONDS), for at most
        BATCH_WAIT_SECONDS, so a burst of uploads shares one model load
        instead of being cut into pieces.
        """
        queue, settings = self.backends.queue, self.settings
        taken = queue.receive(settings.batch_max_messages, settings.queue_visibility_seconds)
        if not taken or (len(taken) == 1 and lone_allowed) or settings.batch_wait_seconds == 0:
            return taken
        now = time.monotonic()
        deadline, last_arrival = now + settings.batch_wait_seconds, now
        while len(taken) < settings.batch_max_messages and now < deadline and now - last_arrival < GATHER_QUIET_SECONDS:
            if self.stopping.wait(GATHER_STEP_SECONDS):
                break
            more = queue.receive(settings.batch_max_messages - len(taken), settings.queue_visibility_seconds)
            now = time.monotonic()
            if more:
                taken, last_arrival = taken + more, now
        return taken

    def _handle(self, deliveries: list[Delivery], started: threading.Event) -> None:
        try:
            self.handle(deliveries, started)
        except Exception:
            # The messages reappear after their visibility timeout and are retried.
            log.exception("unexpected error while handling a batch")
        finally:
            started.set()

    def handle(self, deliveries: list[Delivery], started: threading.Event | None = None) -> None:
        started_at = time.monotonic()
        unique: dict[str, Delivery] = {}
        for delivery in deliveries:
            if delivery.job_id in unique:
                with log_context(job_id=delivery.job_id):
                    log.info("second message for a job in this batch; dropping it")
                self.backends.queue.complete(delivery)
            else:
                unique[delivery.job_id] = delivery
        jobs_claimed = each(self._claim, unique.values())
        claimed = {job.job_id: (job, delivery) for job, delivery in zip(jobs_claimed, unique.values()) if job}
        if not claimed:
            return
        jobs = [job for job, _ in claimed.values()]
        log.info("batch started", extra={"jobs": len(jobs), "claim_seconds": round(time.monotonic() - started_at, 3)})
        metrics.BATCH_JOBS.observe(len(jobs))
        metrics.JOBS_IN_FLIGHT.inc(len(jobs))
        try:
            self._run_batch(claimed, jobs, started)
        finally:
            metrics.JOBS_IN_FLIGHT.dec(len(jobs))

    def _run_batch(self, claimed: dict[str, tuple[Job, Delivery]], jobs: list[Job],
                   started: threading.Event | None) -> None:
        with Lease(self.backends.queue, [d for _, d in claimed.values()], self.settings.queue_visibility_seconds) as lease:
            try:
                outcomes = Batch(jobs, self.backends.store, self.runner, self.settings, self.inflight, self.cancel,
                                 started, records=self.backends.jobs).run()
            except OpenFaceCancelled:
                each(lambda pair: self._hand_back(*pair, lease), claimed.values())
                return
            settling = time.monotonic()
            each(lambda pair: self._settle(*pair, lease, outcomes[pair[0].job_id], shared=len(jobs) > 1),
                 claimed.values())
            log.info("batch settled", extra={"jobs": len(jobs), "settle_seconds": round(time.monotonic() - settling, 3)})

    def _claim(self, delivery: Delivery) -> Job | None:
        """The delivery's job, now running; None when there is nothing to run."""
        jobs, queue = self.backends.jobs, self.backends.queue
        with log_context(job_id=delivery.job_id):
            job = jobs.get(delivery.job_id)
            if job is None:
                log.warning("no record for this job; dropping its message")
                queue.complete(delivery)
                return None
        with log_context(job_id=job.job_id, container=job.container):
            if job.status.is_final:
                log.info("job already %s; dropping duplicate message", job.status.value)
                queue.complete(delivery)
                return None
            if delivery.dequeue_count > self.settings.max_attempts:
                # The worker died on every earlier delivery, so no error was recorded.
                self._give_up(job, delivery, queue, job.error or "the worker stopped during every attempt")
                return None
            job = jobs.move(job, JobStatus.RUNNING, attempts=delivery.dequeue_count, started_at=now())
            log.info("job started", extra={"attempt": delivery.dequeue_count})
            return job

    def _settle(self, job: Job, delivery: Delivery, lease: Lease, outcome: JobReport | RetryLater,
                shared: bool) -> None:
        with log_context(job_id=job.job_id, container=job.container):
            self._settle_job(job, delivery, lease, outcome, shared)

    def _settle_job(self, job: Job, delivery: Delivery, lease: Lease, outcome: JobReport | RetryLater,
                    shared: bool) -> None:
        try:
            if isinstance(outcome, RetryLater):
                self._retry(job, delivery, lease, outcome.reason, shared)
                return
            self.backends.jobs.move(
                job, outcome.status, results=outcome.results, outputs=outcome.outputs,
                summary=outcome.summary, error=outcome.error, finished_at=now(),
            )
            log.info("job %s", outcome.status.value, extra={"summary": outcome.summary, **outcome.steps})
            _count_finished(outcome.status, outcome.results)
        except InvalidTransition as exc:
            log.warning("%s; leaving it as it is", exc)  # another worker settled it first
        lease.complete(delivery)

    def _retry(self, job: Job, delivery: Delivery, lease: Lease, reason: str, shared: bool) -> None:
        reason = _shorten(reason)
        if delivery.dequeue_count >= self.settings.max_attempts:
            self._give_up(job, delivery, lease, reason)
            return
        delay = self._retry_delay(delivery.dequeue_count)
        # After a failure in a shared run, the job runs alone, so a crash is pinned on its cause.
        self.backends.jobs.move(job, JobStatus.QUEUED, runs_alone=job.runs_alone or shared,
                                error=f"attempt {delivery.dequeue_count} failed, will retry: {reason}")
        lease.release(delivery, delay_seconds=delay)
        log.warning("job attempt failed; retrying in %s s: %s", delay, reason)

    def _hand_back(self, job: Job, delivery: Delivery, lease: Lease) -> None:
        with log_context(job_id=job.job_id, container=job.container):
            self.backends.jobs.move(job, JobStatus.QUEUED, error="handed back: the worker shut down during the job")
            lease.release(delivery)
            log.info("job handed back")

    @staticmethod
    def _retry_delay(attempt: int) -> int:
        """Seconds before the next delivery: 5, 10, 20..."""
        return 5 * 2 ** (attempt - 1)

    def _give_up(self, job: Job, delivery: Delivery, letting_go: JobQueue | Lease, reason: str) -> None:
        reason = f"gave up after {self.settings.max_attempts} attempts: {reason}"
        try:
            report = write_failure(job, self.backends.store, reason)
            outputs, results = report.outputs, report.results
        except Exception:
            log.exception("could not write the failure result blobs")
            outputs, results = [], []
        self.backends.jobs.move(
            job, JobStatus.FAILED, error=reason, outputs=outputs,
            results=results, finished_at=now(), attempts=delivery.dequeue_count,
        )
        letting_go.dead_letter(delivery, reason)
        log.error("job moved to the poison queue: %s", reason)
        _count_finished(JobStatus.FAILED, results)


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
    workspace.sweep()  # job folders of workers that died before us
    backends = Backends(settings)
    try:
        backends.ensure()
    except AzureError as exc:
        # The orchestrator restarts us; say why in one line rather than a traceback.
        print(f"worker: storage unreachable ({type(exc).__name__}): {str(exc).splitlines()[0]}", file=sys.stderr)
        return 3
    if settings.metrics_port:
        metrics.serve_worker_metrics(settings.metrics_port, backends.queue)
    worker = Worker(settings, backends, OpenFaceRunner.from_settings(settings))
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    if args.ready_file:
        args.ready_file.write_text(f"{os.getpid()}\n")
    worker.run(burst=args.burst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
