"""Finding jobs whose message is gone: no job stays queued or running for ever.

A job's message can be lost where its record is not: the web process dies
between record and message, or the send fails and the fall-back write fails
too (one storage outage does both). Nothing would ever look at such a job
again. So a worker whose queue is empty, now and then, lists the records
(their status and last sign of life are in each blob's metadata, so no
record is read) and queues a message again for

- a job ``queued`` whose message went out longer ago than
  ``JOB_REQUEUE_SECONDS``: with the queue empty, its message would have
  been delivered by now, unless it sleeps out a retry delay, which is
  shorter (analysis/config.py checks);
- a job ``running`` whose holder has shown no life (a heartbeat in its
  record) for SILENT_PERIODS visibility periods: its worker is gone, and its
  message would have come back long since.

Sweeping only while the queue is empty keeps a long backlog from being
queued twice. A message queued twice costs nothing: the worker drops a
message for a job that is done, and one for a job that a live holder runs.
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from analysis.job import Job, JobStatus, JobStore
from analysis.queue import JobQueue

log = logging.getLogger(__name__)

# A holder heartbeats every third of the visibility timeout: this many periods without one is death.
SILENT_PERIODS = 5


class Sweeper:
    def __init__(
        self,
        jobs: JobStore,
        queue: JobQueue,
        requeue_seconds: float,
        visibility_seconds: float,
        clock: Callable[[], float] = time.time,
    ):
        self.jobs, self.queue = jobs, queue
        self.requeue_seconds = requeue_seconds
        self.silent_seconds = SILENT_PERIODS * visibility_seconds
        self.clock = clock

    def stale(self, status: JobStatus, alive_at: float) -> bool:
        """Whether a job in ``status``, last alive at ``alive_at``, has lost its message."""
        quiet = self.clock() - alive_at
        if status is JobStatus.QUEUED:
            return quiet > self.requeue_seconds
        return status is JobStatus.RUNNING and quiet > self.silent_seconds

    def requeue(self, job: Job) -> Job:
        """Queue the job again; a queued one notes when, so it is queued once per period, not more."""
        if job.status is JobStatus.QUEUED:
            stamp = datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="seconds")
            job = self.jobs.touch(job, None, queued_at=stamp)
        self.queue.enqueue(job.job_id)
        log.warning("job had lost its message; queued again", extra={"job_id": job.job_id, "status": job.status.value})
        return job

    def sweep(self) -> int:
        """Queue each stale job again; returns how many."""
        found = 0
        for seen in self.jobs.records():
            if not self.stale(seen.status, seen.alive_at):
                continue
            job = self.jobs.get(seen.job_id)
            if job is None or not self.stale(job.status, job.alive_at):
                continue  # it moved on meanwhile
            try:
                self.requeue(job)
            except Exception:
                log.warning("could not queue a stale job again", exc_info=True, extra={"job_id": job.job_id})
                continue
            found += 1
        return found

    def run(self, stop: threading.Event, every: float, queue_empty: Callable[[], bool]) -> threading.Thread:
        """In a thread of its own: sweep about every ``every`` seconds while the queue is empty, until ``stop``."""

        def loop() -> None:
            while not stop.wait(every * random.uniform(0.5, 1.5)):  # workers spread their sweeps
                if not queue_empty():
                    continue
                try:
                    self.sweep()
                except Exception:
                    log.warning("could not sweep the job records", exc_info=True)

        thread = threading.Thread(target=contextvars.copy_context().run, args=(loop,), name="sweep", daemon=True)
        thread.start()
        return thread
