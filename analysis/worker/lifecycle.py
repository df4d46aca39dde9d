"""A job's life in a worker: claimed, then settled, retried, handed back or given up.

Claiming a job makes its record the worker's: a token of its own as the
holder, one more attempt counted in the record. Every later move names that
token, so a worker whose lease lapsed unseen, and whose job another worker
took since, changes nothing (``LeaseLost``). A message for a job still
``running`` whose holder fell silent means that worker died: the job goes
to the quarantine line and runs again alone (analysis/worker/quarantine.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from analysis import metrics
from analysis.backends import Backends
from analysis.config import DISK_FULL_DELAY_SECONDS, Settings, retry_delay_seconds
from analysis.job import InvalidTransition, Job, JobConflict, JobStatus, LeaseLost, now
from analysis.logs import log_context
from analysis.queue import Delivery, JobQueue
from analysis.worker.give_up import write_failure
from analysis.worker.lease import Lease
from analysis.worker.publish import SKIPPED, JobReport, RetryLater
from analysis.worker.quarantine import Quarantine

log = logging.getLogger(__name__)

# A message delivered this many times MAX_ATTEMPTS goes to the poison queue, whatever its record says.
DELIVERIES_PER_ATTEMPT = 10


@dataclass
class Claim:
    """A job this worker runs: its record, its message, and the token that makes the record its own."""

    job: Job
    delivery: Delivery
    token: str


class Lifecycle:
    """The moves of a job's record a worker makes, each with its message: claim, settle, retry, hand back, give up."""

    def __init__(self, settings: Settings, backends: Backends, quarantine: Quarantine):
        self.settings, self.backends, self.quarantine = settings, backends, quarantine

    def claim(self, delivery: Delivery, lease: Lease, quarantined: bool = False) -> Claim | None:
        """The delivery's job, now running under a token of ours; None when there is nothing to run here."""
        jobs = self.backends.jobs
        job = _as_queued(delivery) or jobs.get(delivery.job_id)
        for _ in range(3):  # the record may change under us; look again
            with log_context(job_id=delivery.job_id, container=job.container if job else None):
                if not self._runnable(job, delivery, lease, quarantined):
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
        lease.release(delivery, delay_seconds=retry_delay_seconds(1))
        return None

    def _runnable(self, job: Job | None, delivery: Delivery, lease: Lease, quarantined: bool) -> bool:
        """Whether to claim ``job`` now; if not, its message is dealt with here."""
        if job is None:
            log.warning("no record for this job; dropping its message")
            lease.complete(delivery)
        elif job.status.is_final:
            log.info("job already %s; dropping duplicate message", job.status.value)
            lease.complete(delivery)
        elif delivery.dequeue_count > DELIVERIES_PER_ATTEMPT * self.settings.max_attempts:
            self.give_up(
                job,
                delivery,
                lease,
                job.error or f"its message was delivered {delivery.dequeue_count} times without the job ending",
            )
        elif job.status is JobStatus.RUNNING and not quarantined:
            if time.time() - job.alive_at < self.settings.queue_visibility_seconds:
                # Its holder is alive, and its lease lapsed: the holder settles it; look again later.
                log.info("another worker runs this job; its message comes back later")
                lease.release(delivery, delay_seconds=self.settings.queue_visibility_seconds)
            else:
                self.quarantine.admit(delivery, lease)
        elif job.status is JobStatus.RUNNING and job.attempts >= self.settings.max_attempts:
            # Its worker died during every attempt, so no error was recorded.
            self.give_up(job, delivery, lease, job.error or "the worker stopped during every attempt")
        else:
            return True
        return False

    def settle(self, claim: Claim, lease: Lease, outcome: JobReport | RetryLater, shared: bool) -> None:
        """The batch is done with the job: record its outcome (or send it round again) and let its message go."""
        job = claim.job
        with log_context(job_id=job.job_id, container=job.container):
            try:
                if isinstance(outcome, RetryLater):
                    if outcome.spent:
                        self.retry(claim, lease, outcome.reason, shared)
                    else:
                        self.hand_back(claim, lease, outcome.reason, delay=DISK_FULL_DELAY_SECONDS)
                    return
                self.backends.jobs.move(
                    job,
                    outcome.status,
                    by=claim.token,
                    results=outcome.results,
                    outputs=outcome.outputs,
                    summary=outcome.summary,
                    error=outcome.error,
                    finished_at=now(),
                )
                log.info("job %s", outcome.status.value, extra={"summary": outcome.summary, **outcome.steps})
                _count_finished(outcome.status, outcome.results)
            except LeaseLost as exc:  # this worker's lease lapsed and another took the job: theirs now
                log.warning("%s; leaving it to that one", exc)
            except InvalidTransition as exc:
                log.warning("%s; leaving it as it is", exc)  # another worker settled it first
            lease.complete(claim.delivery)

    def retry(self, claim: Claim, lease: Lease, reason: str, shared: bool) -> None:
        """Back to the queue after a delay, for another attempt; after the last one, give up."""
        job, reason = claim.job, _shorten(reason)
        if job.attempts >= self.settings.max_attempts:
            self.give_up(job, claim.delivery, lease, reason, token=claim.token)
            return
        delay = retry_delay_seconds(job.attempts)
        # After a failure in a shared run, the job runs alone, so a crash is pinned on its cause.
        self._requeue(
            claim,
            lease,
            delay,
            runs_alone=job.runs_alone or shared,
            error=f"attempt {job.attempts} failed, will retry: {reason}",
        )
        log.warning("job attempt failed; retrying in %s s: %s", delay, reason)

    def hand_back(self, claim: Claim, lease: Lease, reason: str, delay: int = 0) -> None:
        """Back to the queue without spending an attempt: nothing went wrong with the job itself."""
        job = claim.job
        # results_before: it may have published some, which the next worker should find.
        self._requeue(
            claim,
            lease,
            delay,
            attempts=max(0, job.attempts - 1),
            results_before=True,
            error=f"handed back: {reason}",
        )
        log.info("job handed back: %s", reason, extra={"delay_seconds": delay})

    def _requeue(self, claim: Claim, lease: Lease, delay: int, **changes) -> None:
        """The job queued again, by its holder, and its message back on the queue after ``delay``."""
        self.backends.jobs.move(claim.job, JobStatus.QUEUED, by=claim.token, holder=None, queued_at=now(), **changes)
        lease.release(claim.delivery, delay_seconds=delay)

    def give_up(
        self, job: Job, delivery: Delivery, letting_go: JobQueue | Lease, reason: str, token: str | None = None
    ) -> None:
        """``failed`` for good: its result blobs say why (destroying no answer), its message to the poison queue."""
        reason = f"gave up after {job.attempts} attempt{'' if job.attempts == 1 else 's'}: {reason}"
        try:
            report = write_failure(job, self.backends.store, reason)
            outputs, results = report.outputs, report.results
        except Exception:
            log.exception("could not write the failure result blobs")
            outputs, results = [], []
        self.backends.jobs.move(
            job,
            JobStatus.FAILED,
            by=token,
            error=reason,
            outputs=outputs,
            results=results,
            finished_at=now(),
        )
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
        if result["status"] != SKIPPED:  # not this job's media
            metrics.MEDIA.labels(result["status"]).inc()


def _shorten(text: str) -> str:
    return text if len(text) < 2000 else text[:2000] + "..."
