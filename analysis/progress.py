"""How far a running job is: media finished out of its total, and the percent of each video.

A batch notes progress as OpenFace reports it; a ``ProgressWriter`` copies
it into the job records (``GET /jobs/<id>`` shows ``progress``) at most
every ``PROGRESS_SECONDS`` and only when it changed, so a batch of many jobs
costs a bounded number of record writes, and a short batch none at all.
"""

from __future__ import annotations

import logging
import threading

from analysis.job import Job, JobConflict, JobStore

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
            return {"media_total": max(self.total, len(self._done)), "media_done": len(self._done),
                    "percent": dict(sorted(self._percent.items()))}


class ProgressWriter:
    """Writes each job's progress into its record while a batch runs; use as a context manager.

    Jobs are tracked as the batch takes them and let go (``retire``) before
    each is settled, so a progress write never races the final one.
    """

    def __init__(self, records: JobStore | None, interval: float = PROGRESS_SECONDS):
        self.records = records
        self.interval = interval
        self._jobs: dict[str, tuple[Job, JobProgress]] = {}
        self._written: dict[str, int] = {}  # job id -> the progress change last written
        self._lock = threading.Lock()  # held by a round of writes, so retire waits for it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def track(self, job: Job, progress: JobProgress) -> None:
        with self._lock:
            self._jobs[job.job_id] = (job, progress)
            self._written[job.job_id] = 0

    def retire(self, job_id: str) -> None:
        """No more progress for this job: once this returns, nothing writes its record from here."""
        with self._lock:
            self._jobs.pop(job_id, None)

    def __enter__(self) -> "ProgressWriter":
        if self.records is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                for job_id, (job, progress) in list(self._jobs.items()):
                    if self._stop.is_set():
                        return
                    if job_id in self._written and progress.changes != self._written[job_id]:
                        self._write(job, progress)

    def _write(self, job: Job, progress: JobProgress) -> None:
        changes = progress.changes
        job.progress = progress.snapshot()
        try:
            self.records.save(job)
            self._written[job.job_id] = changes
        except JobConflict:
            # Someone else wrote the record (another worker took the job over): leave it to them.
            del self._written[job.job_id]
            log.info("job record changed elsewhere; no more progress from here", extra={"job_id": job.job_id})
        except Exception as exc:  # progress is a courtesy: a failed write must not stop the batch
            log.warning("could not write progress", extra={"job_id": job.job_id, "error": repr(exc)})
