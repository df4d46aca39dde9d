"""Gathering a batch: its first messages, then those that keep arriving, each job claimed and added as it comes.

Jobs are admitted side by side (claim, plan, download), so the batch is ready
to run soon after its last job came. Gathering ends once nothing came for
GATHER_QUIET_SECONDS (at once for a lone job, and wherever no model load is
to be shared; while another batch runs OpenFace, once this one is worth a
process too), at ``most`` messages, or BATCH_WAIT_SECONDS after it began.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from analysis import metrics
from analysis.config import Settings, retry_delay_seconds
from analysis.logs import log_context
from analysis.parallel import THREADS
from analysis.queue import Delivery, JobQueue
from analysis.worker.batch import Batch
from analysis.worker.lease import Lease
from analysis.worker.lifecycle import Claim, Lifecycle

log = logging.getLogger(__name__)

# While gathering, the queue is looked at this often; gathering stops when nothing came for QUIET.
GATHER_STEP_SECONDS = 0.05
GATHER_QUIET_SECONDS = 0.1


class Held:
    """The jobs a batch claimed, each until it is settled."""

    def __init__(self) -> None:
        self._claims: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self.count = 0  # jobs claimed in all

    def add(self, claim: Claim) -> None:
        with self._lock:
            self._claims[claim.job.job_id] = claim
            self.count += 1

    def pop(self, job_id: str) -> Claim:
        with self._lock:
            return self._claims.pop(job_id)

    def rest(self) -> list[Claim]:
        with self._lock:
            return list(self._claims.values())


class Gathering:
    """One batch's gathering: admits its first messages and those that keep arriving, then returns."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        lifecycle: Lifecycle,
        lease: Lease,
        batch: Batch,
        held: Held,
        stopping: threading.Event,
        worth_starting: Callable[[], bool],
        quiet_seconds: float,
        quarantined: bool = False,
    ):
        self.settings, self.queue, self.lifecycle = settings, queue, lifecycle
        self.lease, self.batch, self.held = lease, batch, held
        self.stopping, self.worth_starting, self.quiet_seconds = stopping, worth_starting, quiet_seconds
        self.quarantined = quarantined
        # A job of the quarantine line runs in a batch of its own.
        self.most = 1 if quarantined else settings.batch_max_messages
        self._seen: set[str] = set()

    def run(self, first: list[Delivery]) -> None:
        """Admit ``first`` and what keeps arriving; returns once every job taken is in the batch."""
        with ThreadPoolExecutor(THREADS, thread_name_prefix="admit") as pool:
            admitting = self._take(pool, first)
            messages = len(first)
            now = time.monotonic()
            deadline, last_arrival, next_look = now + self.settings.batch_wait_seconds, now, now + GATHER_STEP_SECONDS
            while messages < self.most and not self.stopping.is_set():
                admitting = {future for future in admitting if not future.done()}
                now = time.monotonic()
                if now >= deadline or (
                    not admitting and now - last_arrival >= self.quiet_seconds and self.worth_starting()
                ):
                    break
                if now < next_look:  # one look at the queue per step, however often admissions finish
                    wait(admitting, timeout=next_look - now) if admitting else time.sleep(next_look - now)
                    continue
                next_look = now + GATHER_STEP_SECONDS
                more = self.queue.receive(self.most - messages, self.settings.queue_visibility_seconds)
                if more:
                    admitting |= self._take(pool, more)
                    messages, last_arrival = messages + len(more), time.monotonic()

    def _take(self, pool: ThreadPoolExecutor, deliveries: list[Delivery]) -> set[Future]:
        admitting = set()
        for delivery in deliveries:
            if delivery.job_id in self._seen:
                with log_context(job_id=delivery.job_id):
                    log.info("second message for a job in this batch; dropping it")
                self.queue.complete(delivery)
                continue
            self._seen.add(delivery.job_id)
            order = len(self._seen)
            admitting.add(pool.submit(contextvars.copy_context().run, self._admit, delivery, order))
        return admitting

    def _admit(self, delivery: Delivery, order: int) -> None:
        self.lease.hold(delivery)
        try:
            claim = self.lifecycle.claim(delivery, self.lease, self.quarantined)
        except Exception:
            log.exception("could not claim the job; its message comes back later", extra={"job_id": delivery.job_id})
            self.lease.release(delivery, delay_seconds=retry_delay_seconds(1))
            return
        if claim is None:
            return
        self.held.add(claim)
        metrics.JOBS_IN_FLIGHT.inc()
        try:
            self.batch.add(claim.job, order)
        except Exception:  # never reported: retried once the batch is over
            log.exception("could not plan the job", extra={"job_id": claim.job.job_id})
