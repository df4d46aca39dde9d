"""How far a running job is: media finished out of its total, and the percent of each video.

A batch notes progress as OpenFace reports it; a ``ProgressWriter`` copies
it into the job records (``GET /jobs/<id>`` shows ``progress``) at most
every ``PROGRESS_SECONDS`` and only when it changed, so a batch of many jobs
costs a bounded number of record writes, and a short batch none at all.
The same writer keeps a heartbeat in the records of long jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from analysis.job import InvalidTransition, Job, JobStore, LeaseLost, now

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 3.0


class JobProgress:
    def __init__(self) -> None:
        self.total = 0
        self._done: set[str] = set()
        self._percent: dict[str, int] = {}
        self._lock = threading.Lock()  # OpenFace threads note, the writer reads
        self.changes = 0

    def expect_more(self, count: int) -> None:
        """``count`` media to come, besides those already done (answered before OpenFace)."""
        with self._lock:
            self.total = len(self._done) + count
            self.changes += 1

    def percent(self, blob: str, value: int) -> None:
        """A video's percent so far; it never goes back (console reads may lag a moment)."""
        with self._lock:
            if blob not in self._done and value > self._percent.get(blob, -1):
                self._percent[blob] = value
                self.changes += 1

    def done(self, blob: str) -> None:
        with self._lock:
            if blob not in self._done:
                self._done.add(blob)
                if blob in self._percent:
                    self._percent[blob] = 100
                self.changes += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "media_total": max(self.total, len(self._done)),
                "media_done": len(self._done),
                "percent": dict(sorted(self._percent.items())),
            }


@dataclass
class _Tracked:
    job: Job
    progress: JobProgress
    holder: str | None  # the claim's token: only its holder writes the record
    written: int = 0  # the progress change last written
    at: float = field(default_factory=time.monotonic)  # when the record was last written from here


class ProgressWriter:
    """Writes each job's progress, and a heartbeat, into its record while a batch runs; a context manager.

    Jobs are tracked as the batch takes them and let go (``retire``) before
    each is settled, so a write from here never races the final one. Every
    ``heartbeat_seconds`` a job's record is written even without news
    (``heartbeat_at``): a job running that long without one has lost its
    worker (analysis/worker/lifecycle.py, analysis/sweep.py).
    """

    def __init__(
        self, jobs: JobStore | None, interval: float = PROGRESS_SECONDS, heartbeat_seconds: float | None = None
    ):
        self.jobs = jobs
        self.interval = interval
        self.heartbeat_seconds = heartbeat_seconds
        self._jobs: dict[str, _Tracked] = {}
        self._lock = threading.Lock()  # held by a round of writes, so retire waits for it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def track(self, job: Job, progress: JobProgress) -> None:
        with self._lock:
            self._jobs[job.job_id] = _Tracked(job, progress, job.holder)

    def retire(self, job_id: str) -> None:
        """No more progress for this job: once this returns, nothing writes its record from here."""
        with self._lock:
            self._jobs.pop(job_id, None)

    def __enter__(self) -> ProgressWriter:
        if self.jobs is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        step = min(self.interval, self.heartbeat_seconds or self.interval)
        while not self._stop.wait(step):
            with self._lock:
                for tracked in list(self._jobs.values()):
                    if self._stop.is_set():
                        return
                    quiet = time.monotonic() - tracked.at
                    news = tracked.progress.changes != tracked.written
                    if news or (self.heartbeat_seconds is not None and quiet >= self.heartbeat_seconds):
                        self._write(tracked)

    def _write(self, tracked: _Tracked) -> None:
        changes = tracked.progress.changes
        job_id = tracked.job.job_id
        try:
            tracked.job = self.jobs.touch(
                tracked.job, tracked.holder, progress=tracked.progress.snapshot(), heartbeat_at=now()
            )
            tracked.written, tracked.at = changes, time.monotonic()
        except (LeaseLost, InvalidTransition):
            # Another worker took the job over: leave its record to that one.
            self._jobs.pop(job_id, None)
            log.info("job held by another claim now; no more progress from here", extra={"job_id": job_id})
        except Exception as exc:  # progress is a courtesy: a failed write must not stop the batch
            tracked.at = time.monotonic()
            log.warning("could not write progress", extra={"job_id": job_id, "error": repr(exc)})
