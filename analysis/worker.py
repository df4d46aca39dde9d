"""The worker process: ``python -m analysis.worker``.

Takes one job at a time off the queue and runs it. While a job runs, a
heartbeat keeps its message invisible to other workers. A failure worth
retrying puts the message back with a delay; after ``MAX_ATTEMPTS``
deliveries the job is failed, its result blobs say why, and the message moves
to the poison queue. On SIGTERM the current job may finish within
``WORKER_SHUTDOWN_GRACE_SECONDS``; after that it is stopped and handed back.
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from azure.core.exceptions import AzureError

from analysis.analyse import Analysis, write_failure
from analysis.backends import Backends
from analysis.config import ConfigError, Settings, load_settings
from analysis.job import Job, JobStatus, now
from analysis.logs import configure_logging, log_context
from analysis.openface import OpenFaceCancelled, OpenFaceRunner, missing_executables
from analysis.queue import Delivery

log = logging.getLogger("analysis.worker")


class Heartbeat:
    """Renews a message's invisibility every third of the timeout until stopped."""

    def __init__(self, backends: Backends, delivery: Delivery, visibility_seconds: int):
        self.queue = backends.queue
        self.delivery = delivery
        self.seconds = visibility_seconds
        self._stop = threading.Event()
        context = contextvars.copy_context()  # keep job_id in the thread's log lines
        self._thread = threading.Thread(target=context.run, args=(self._beat,), daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.queue.extend(self.delivery, self.seconds)
                log.debug("heartbeat")
            except Exception:  # the next beat may succeed; the job goes on meanwhile
                log.warning("could not extend the message's visibility", exc_info=True)


class Worker:
    def __init__(self, settings: Settings, backends: Backends, runner: OpenFaceRunner):
        self.settings = settings
        self.backends = backends
        self.runner = runner
        self.stopping = threading.Event()  # take no new jobs
        self.cancel = threading.Event()  # stop the current job and hand it back

    def request_stop(self, signum=None, frame=None) -> None:
        if self.stopping.is_set():
            self.cancel.set()  # a second signal: do not wait for the grace period
            return
        log.info("stopping: the current job may finish within %s s", self.settings.worker_shutdown_grace_seconds)
        self.stopping.set()
        timer = threading.Timer(self.settings.worker_shutdown_grace_seconds, self.cancel.set)
        timer.daemon = True
        timer.start()

    def run(self, burst: bool = False) -> None:
        """Process jobs until stopped; with ``burst``, until the queue is empty."""
        log.info("worker started", extra={"queue": self.settings.job_queue_name})
        while not self.stopping.is_set():
            try:
                delivery = self.backends.queue.receive(self.settings.queue_visibility_seconds)
            except Exception:
                log.exception("could not read the queue; retrying")
                self.stopping.wait(self.settings.worker_poll_seconds * 5)
                continue
            if delivery is None:
                if burst:
                    break
                self.stopping.wait(self.settings.worker_poll_seconds)
                continue
            with log_context(job_id=delivery.job_id):
                try:
                    self.handle(delivery)
                except Exception:
                    # The message reappears after its visibility timeout and is retried.
                    log.exception("unexpected error while handling the job")
        log.info("worker stopped")

    def handle(self, delivery: Delivery) -> None:
        jobs, queue = self.backends.jobs, self.backends.queue
        job = jobs.get(delivery.job_id)
        if job is None:
            log.warning("no record for this job; dropping its message")
            queue.complete(delivery)
            return
        with log_context(container=job.container):
            if job.status.is_final:
                log.info("job already %s; dropping duplicate message", job.status.value)
                queue.complete(delivery)
                return
            if delivery.dequeue_count > self.settings.max_attempts:
                # The worker died on every earlier delivery, so no error was recorded.
                self._give_up(job, delivery, job.error or "the worker stopped during every attempt")
                return
            job = jobs.update(job, status=JobStatus.RUNNING, attempts=delivery.dequeue_count, started_at=now())
            log.info("job started", extra={"attempt": delivery.dequeue_count})
            with Heartbeat(self.backends, delivery, self.settings.queue_visibility_seconds):
                self._run(job, delivery)

    def _run(self, job: Job, delivery: Delivery) -> None:
        jobs, queue = self.backends.jobs, self.backends.queue
        try:
            report = Analysis(job, self.backends.store, self.runner, self.settings).run(self.cancel)
        except OpenFaceCancelled:
            jobs.update(job, status=JobStatus.QUEUED, error="handed back: the worker shut down during the job")
            queue.release(delivery)
            log.info("job handed back")
            return
        except Exception as exc:
            reason = _describe(exc)
            if delivery.dequeue_count >= self.settings.max_attempts:
                self._give_up(job, delivery, reason)
                return
            delay = self._retry_delay(delivery.dequeue_count)
            jobs.update(job, status=JobStatus.QUEUED, error=f"attempt {delivery.dequeue_count} failed, will retry: {reason}")
            queue.release(delivery, delay_seconds=delay)
            log.warning("job attempt failed; retrying in %s s: %s", delay, reason)
            return
        jobs.update(
            job, status=report.status, results=report.results, outputs=report.outputs,
            summary=report.summary, error=report.error, finished_at=now(),
        )
        queue.complete(delivery)
        log.info("job %s", report.status.value, extra={"summary": report.summary})

    @staticmethod
    def _retry_delay(attempt: int) -> int:
        """Seconds before the next delivery: 5, 10, 20..."""
        return 5 * 2 ** (attempt - 1)

    def _give_up(self, job: Job, delivery: Delivery, reason: str) -> None:
        reason = f"gave up after {self.settings.max_attempts} attempts: {reason}"
        try:
            report = write_failure(job, self.backends.store, reason)
            outputs, results = report.outputs, report.results
        except Exception:
            log.exception("could not write the failure result blobs")
            outputs, results = [], []
        self.backends.jobs.update(
            job, status=JobStatus.FAILED, error=reason, outputs=outputs,
            results=results, finished_at=now(), attempts=delivery.dequeue_count,
        )
        self.backends.queue.dead_letter(delivery, reason)
        log.error("job moved to the poison queue: %s", reason)


def _describe(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
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
    backends = Backends(settings)
    try:
        backends.ensure()
    except AzureError as exc:
        # The orchestrator restarts us; say why in one line rather than a traceback.
        print(f"worker: storage unreachable ({type(exc).__name__}): {str(exc).splitlines()[0]}", file=sys.stderr)
        return 3
    worker = Worker(settings, backends, OpenFaceRunner.from_settings(settings))
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    if args.ready_file:
        args.ready_file.write_text(f"{os.getpid()}\n")
    worker.run(burst=args.burst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
