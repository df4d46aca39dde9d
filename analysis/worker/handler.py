"""One batch, from its first messages to each of its jobs settled.

The loop (analysis/worker/loop.py) starts a batch whenever a slot is free and
hands it to ``BatchHandler.handle`` in a thread of its own. A lease keeps the
batch's messages hidden while it runs; gathering claims the jobs that join;
the batch runs them; each job is settled as soon as its outcome is known, and
the jobs the batch never reported (a shutdown, a publish that failed) go
back to the queue when it is over.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from analysis import metrics
from analysis.backends import Backends
from analysis.config import Settings
from analysis.job import InvalidTransition, Job
from analysis.logs import log_context
from analysis.openface.results import OpenFaceCancelled
from analysis.openface.runner import OpenFaceRunner
from analysis.openface.schedule import MIN_IMAGES_PER_PROCESS
from analysis.queue import Delivery
from analysis.worker.batch import Batch
from analysis.worker.disk import DiskBudget
from analysis.worker.gather import GATHER_QUIET_SECONDS, Gathering, Held
from analysis.worker.inflight import InFlight
from analysis.worker.lease import Lease
from analysis.worker.lifecycle import Lifecycle
from analysis.worker.publish import JobReport, RetryLater

log = logging.getLogger(__name__)


class BatchHandler:
    """What a worker's batches share: the blob versions in flight, the disk budget, the job lifecycle."""

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        runner: OpenFaceRunner,
        lifecycle: Lifecycle,
        stopping: threading.Event,
        cancel: threading.Event,
    ):
        self.settings, self.backends, self.runner, self.lifecycle = settings, backends, runner, lifecycle
        self.stopping = stopping  # the worker takes no new batch: gathering stops
        self.cancel = cancel  # the running batches stop and hand their jobs back
        self.inflight = InFlight()  # blob versions its batches are analysing
        self.disk = DiskBudget(settings.disk_reserve_bytes)

    def handle(
        self,
        first: list[Delivery],
        started: threading.Event | None = None,
        alone: bool = False,
        quarantined: bool = False,
    ) -> None:
        """Gather a batch from ``first`` and what keeps arriving, run it, and settle each of its jobs.

        ``quarantined``: ``first`` is one job whose worker died while running it; it runs alone.
        """
        began = time.monotonic()
        held = Held()
        cancelled = False
        with Lease(self.backends.queue, [], self.settings.queue_visibility_seconds) as lease:
            with Batch(
                self.backends.store,
                self.runner,
                self.settings,
                self.inflight,
                self.cancel,
                started,
                jobs=self.backends.jobs,
                on_done=functools.partial(self._settle, held, lease),
                disk=self.disk,
            ) as batch:
                # Company only pays where every OpenFace run loads its models; warm engines need none.
                quiet = GATHER_QUIET_SECONDS if self.runner.pays_per_run and not alone else 0.0
                Gathering(
                    self.settings,
                    self.backends.queue,
                    self.lifecycle,
                    lease,
                    batch,
                    held,
                    self.stopping,
                    functools.partial(self._worth_starting, batch),
                    quiet,
                    quarantined,
                ).run(first)
                if batch.members:
                    log.info(
                        "batch gathered",
                        extra={"jobs": len(batch.members), "gather_seconds": round(time.monotonic() - began, 3)},
                    )
                    metrics.BATCH_JOBS.observe(len(batch.members))
                    try:
                        batch.run()
                    except OpenFaceCancelled:
                        cancelled = True
            # The batch is over: the jobs it did not report go back to the queue.
            for claim in held.rest():
                with log_context(job_id=claim.job.job_id, container=claim.job.container):
                    try:
                        if cancelled:
                            self.lifecycle.hand_back(claim, lease, "the worker shut down during the job")
                        else:
                            self.lifecycle.retry(
                                claim, lease, "the worker could not publish its results", shared=held.count > 1
                            )
                    except InvalidTransition as exc:
                        log.warning("%s; leaving it to that one", exc)
        metrics.JOBS_IN_FLIGHT.dec(held.count)

    def _settle(self, held: Held, lease: Lease, job: Job, outcome: JobReport | RetryLater) -> None:
        claim = held.pop(job.job_id)
        claim.job = job
        self.lifecycle.settle(claim, lease, outcome, shared=held.count > 1)

    def _worth_starting(self, batch: Batch) -> bool:
        """While another batch runs OpenFace there is no hurry: a batch too small to pay for a
        process of its own waits for company (up to BATCH_WAIT_SECONDS) rather than take a slot."""
        slots = self.runner.slots
        if not self.runner.pays_per_run:
            return True
        return slots.free == slots.count or batch.worth_a_process(MIN_IMAGES_PER_PROCESS)
