"""A batch: the jobs a worker took off the queue together, run with as few OpenFace runs as possible.

Jobs join a batch one by one (``add``), while the worker still gathers
messages: each is planned (analysis/worker/plan.py) and its new media
downloaded at once (analysis/worker/download.py), so the batch is ready to
run soon after the last job came. ``run`` then runs OpenFace per media kind
and options: one runner call (as many OpenFace processes as pay and are
free) over the group's media, each blob version once however many jobs list
it (analysis/worker/shared.py).

Every job still gets its own result blobs, manifest and report, and is
reported (``on_done``) as soon as all of its media have their outcome, while
OpenFace goes on with the rest. What goes wrong with one job's media stays
with that job: an unreadable or too large file is that job's outcome, and a
crash of OpenFace sends back only the jobs whose media it had not finished.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from analysis.config import Settings
from analysis.job import Job, JobStore
from analysis.openface.interpret import interpret
from analysis.openface.results import FileResult, Outcome
from analysis.openface.runner import OpenFaceRunner
from analysis.parallel import Tasks
from analysis.storage import MediaStore
from analysis.worker.disk import DiskBudget
from analysis.worker.download import Downloader
from analysis.worker.inflight import InFlight, SharedOutcome
from analysis.worker.manifest import finish
from analysis.worker.plan import READ_WHOLE_BYTES, BlobFacts, choose_media
from analysis.worker.progress import JobProgress, ProgressWriter
from analysis.worker.publish import JobReport, ResultWriter, RetryLater, publish_for, publish_shared
from analysis.worker.shared import Member, SharedMedia, Sharing, shared_key
from analysis.worker.workspace import workspace
from media_rules import Media

log = logging.getLogger(__name__)

JobOutcome = JobReport | RetryLater


class Batch:
    """Use as a context manager: ``add`` each job (from any thread), then ``run`` once."""

    def __init__(
        self,
        store: MediaStore,
        runner: OpenFaceRunner,
        settings: Settings,
        inflight: InFlight | None = None,
        cancel: threading.Event | None = None,
        started: threading.Event | None = None,
        jobs: JobStore | None = None,
        on_done: Callable[[Job, JobOutcome], None] | None = None,
        disk: DiskBudget | None = None,
    ):
        self.store, self.runner, self.settings = store, runner, settings
        self.cancel = cancel or threading.Event()
        self.started = started or threading.Event()  # set once OpenFace has its slots, or is not needed
        self.on_done = on_done or (lambda job, outcome: None)
        self.members: list[Member] = []
        self.disk = disk or DiskBudget(settings.disk_reserve_bytes)
        # Given its spool folder once the workspace is there; a blob over the limit is never read whole.
        self._facts = BlobFacts(store, read_whole_bytes=min(READ_WHOLE_BYTES, settings.max_blob_bytes), disk=self.disk)
        self._downloads = Downloader(store, self._facts, self.disk, settings)
        self._sharing = Sharing(inflight or InFlight(), self._media_done)
        # jobs None: progress is written nowhere. The heartbeat shows a long job's worker is alive.
        self._progress = ProgressWriter(jobs, heartbeat_seconds=settings.queue_visibility_seconds / 3)
        self._lock = threading.Lock()  # members, and each one's count of media pending
        self._tasks = Tasks("publish")  # publishing and finishing jobs, off the threads that follow OpenFace
        self._stack = contextlib.ExitStack()
        self._clock = _Clock()
        self.tmp = Path()

    def __enter__(self) -> Batch:
        self.tmp = self._stack.enter_context(workspace())
        for folder in ("in", "out", "tables"):
            (self.tmp / folder).mkdir()
        # OpenFace reads in/ and writes out/, as a user of its own when sandboxed.
        for folder in (self.tmp, self.tmp / "out"):
            self.runner.sandbox.open_to(folder)
        self._facts.spool = self._downloads.folder = self.tmp / "in"
        self._stack.enter_context(self._progress)
        return self

    def __exit__(self, *exc) -> None:
        self._tasks.shutdown()  # jobs whose media all have their outcome are reported, even when OpenFace stopped
        self._sharing.close()
        self.started.set()
        self._stack.close()

    def add(self, job: Job, order: int = 0) -> None:
        """Plan ``job`` and download the media it brings that no one has yet; blocks until done.

        ``order``: the job's place among the batch's, as the jobs came (jobs are added side by side).
        Its time cap (JOB_TIMEOUT_SECONDS) runs from here.
        """
        member = Member(
            job,
            ResultWriter(job, self.store, JobProgress()),
            order,
            deadline=time.monotonic() + self.settings.job_timeout_seconds,
        )
        member.plan(
            lambda: choose_media(
                job,
                self._facts,
                member.results,
                self.settings,
                lambda blob: self._sharing.inflight.knows(shared_key(job, blob)),
                self.disk.capacity(),
            )
        )
        member.pending = len(member.candidates) + 1  # the last one is the job's own, dropped below
        with self._lock:
            self.members.append(member)
        self._progress.track(job, member.results.progress)
        for candidate in member.candidates:
            if candidate.problem:
                publish_for(member, candidate, *candidate.problem)
                self._media_done(member)
                continue
            item = self._sharing.join(member, candidate)
            if item is not None:  # the first to list it: ours to download
                early = self._downloads.fetch(item)
                if isinstance(early, SharedOutcome):
                    self._sharing.announce(item, early)
                elif early is not None:  # refused before OpenFace
                    self._publish(item, early, Media(job.media))
        self._media_done(member)

    def worth_a_process(self, images: int) -> bool:
        return self._sharing.worth_a_process(images)

    def run(self) -> None:
        """Run OpenFace over the batch's media; each job is reported (``on_done``) as soon as its media are done.

        Raises OpenFaceCancelled on shutdown: the jobs not yet reported are the caller's to hand back.
        """
        self._clock.lap("prepare")
        for items in self._sharing.groups():
            self._run_group(items)
        self.started.set()  # OpenFace is done: the worker may take more while this batch finishes
        self._sharing.take_the_others(self.cancel)
        self._clock.lap("wait")
        self._tasks.wait()  # every job finished and reported
        self._clock.lap("finish")
        log.info("batch done", extra={"jobs": len(self.members), **self._clock.laps})

    def _run_group(self, items: list[SharedMedia]) -> None:
        job = items[0].claimants[0][0].job
        media = Media(job.media)
        by_key = {item.file.key: item for item in items}
        self.runner.run(
            media,
            [item.file for item in items],
            self.tmp / "out",
            job.flags,
            self.cancel,
            self.started,
            # Each media's results are published as soon as OpenFace has finished it.
            on_result=lambda result: self._tasks.submit(self._publish, by_key[result.key], result, media),
            executable=job.options.executable(media),
            on_progress=lambda key, percent: self._note_progress(by_key[key], percent),
        )
        seconds = self._clock.lap("openface")
        for member in {id(member): member for item in items for member, _ in item.claimants}.values():
            member.steps["openface_seconds"] += seconds

    def _note_progress(self, item: SharedMedia, percent: int) -> None:
        for member, candidate in item.claimants:
            member.results.progress.percent(candidate.blob.name, percent)

    def _publish(self, item: SharedMedia, result: FileResult, media: Media) -> None:
        """One media's result, for every job that listed it."""
        if result.outcome is Outcome.CRASHED:
            self._sharing.announce(item, SharedOutcome(retry=result.reason))
            return
        outcome = interpret(result, media, item.blob.name, self.settings.face_confidence_threshold)
        self._sharing.published(item, publish_shared(list(item.claimants), outcome, media))

    def _media_done(self, member: Member) -> None:
        """One more of the job's media has its outcome; after the last, the job is finished and reported."""
        with self._lock:
            member.pending -= 1
            last = member.pending == 0
        if last:
            self._tasks.submit(self._report, member)

    def _report(self, member: Member) -> None:
        self._progress.retire(member.job.job_id)  # the job's next record write is its settling
        outcome = finish(member, self.tmp / "tables", batch_jobs=len(self.members))
        with member.context():
            try:
                self.on_done(member.job, outcome)
            except Exception:
                log.exception("could not settle the job")


class _Clock:
    """Seconds spent in each step of a batch, for its log line."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, step: str) -> float:
        now = time.monotonic()
        seconds, self._last = now - self._last, now
        self.laps[f"{step}_seconds"] = round(self.laps.get(f"{step}_seconds", 0) + seconds, 3)
        return seconds
