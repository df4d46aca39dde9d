"""A batch: the jobs a worker took off the queue together, run with as few OpenFace runs as possible.

Jobs join a batch one by one (``add``), while the worker still gathers
messages: each is planned and its new media downloaded at once, so the
batch is ready to run soon after the last job came. ``run`` then runs
OpenFace per media kind and options: one runner call (as many OpenFace
processes as pay and are free) over the group's media, each blob version
once however many jobs list it, as the jobs of uploads trickling into one
container do; a version another batch of the worker is analysing at the
same time is left to it (analysis/inflight.py).

Every job still gets its own result blobs, manifest and report, and is
reported (``on_done``) as soon as all of its media are settled, while
OpenFace goes on with the rest. What goes wrong with one job's media stays
with that job: an unreadable or too large file is that job's outcome, and a
crash of OpenFace sends back only the jobs whose media it had not finished.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from azure.core.exceptions import AzureError

from analysis.analyse import (
    FAILED, READ_WHOLE_BYTES, SUPERSEDED, BlobFacts, Candidate, JobFailed, JobReport, ResultWriter, choose_media,
    image_size_problem,
)
from analysis.config import Settings
from analysis.disk import DiskBudget
from analysis.inflight import InFlight, Key, Word
from analysis.job import Job, JobStore
from analysis.logs import log_context
from analysis.openface import FileResult, MediaFile, OpenFaceCancelled, OpenFaceRunner, Outcome
from analysis.outputs import zip_folder
from analysis.parallel import THREADS
from analysis.plot import draw_video
from analysis.progress import JobProgress, ProgressWriter
from analysis.storage import BlobChanged, BlobInput, ContainerNotFound, MediaStore
from analysis.summary import InvalidCsv, has_face, summarise
from analysis.workspace import workspace
from media_rules import Media

log = logging.getLogger(__name__)


@dataclass
class RetryLater:
    """The job's attempt failed for a reason that may pass: try it again.

    ``spent`` False: nothing failed, the worker could not take the job on now
    (its disk is full): it goes back for later without spending an attempt.
    """

    reason: str
    spent: bool = True


JobOutcome = JobReport | RetryLater


@dataclass
class _Member:
    """One job of the batch and what has become of it."""

    job: Job
    results: ResultWriter
    order: int = 0  # the job's place in the batch: the first job to list a media publishes it
    deadline: float = float("inf")  # time.monotonic() when its time cap runs out
    candidates: list[Candidate] = field(default_factory=list)
    pending: int = 0  # candidates still without an outcome; at 0 the job is finished
    retry: str | None = None  # why the job must be tried again
    later: str | None = None  # why the job must wait, spending no attempt (no room on the disk)
    gone: bool = False  # its container was deleted: no blob can be written
    steps: dict = field(default_factory=lambda: defaultdict(float))

    def retry_later(self, reason: str) -> None:
        self.retry = self.retry or reason

    def wait_for_room(self, reason: str) -> None:
        self.later = self.later or reason


@dataclass
class _SharedMedia:
    """One blob version that jobs of a group need OpenFace's result for."""

    key: Key
    blob: BlobInput
    extension: str | None  # None: planned as in hand elsewhere, never judged here
    claimants: list[tuple[_Member, Candidate]] = field(default_factory=list)
    file: MediaFile | None = None
    word: Word | None = None  # how its analysis went, once known
    owner: Future | None = None  # set when another batch analyses it: its word comes from there

    @property
    def container(self) -> str:
        return self.key[0]

    @property
    def run_key(self) -> tuple:
        """What media must share to go through one OpenFace run: kind, faces, options, alone or not."""
        return self.key[3:]


class Batch:
    """Use as a context manager: ``add`` each job (from any thread), then ``run`` once."""

    def __init__(self, store: MediaStore, runner: OpenFaceRunner, settings: Settings,
                 inflight: InFlight | None = None, cancel: threading.Event | None = None,
                 started: threading.Event | None = None, records: JobStore | None = None,
                 on_done: Callable[[Job, JobOutcome], None] | None = None, disk: DiskBudget | None = None):
        self.store = store
        self.runner = runner
        self.settings = settings
        self.inflight = inflight or InFlight()
        self.disk = disk or DiskBudget(settings.disk_reserve_bytes)
        self.cancel = cancel
        self.started = started or threading.Event()  # set once OpenFace has its slots, or is not needed
        self.on_done = on_done or (lambda job, outcome: None)
        self.members: list[_Member] = []
        # Given its spool folder once the workspace is there; a blob over the limit is never read whole.
        self._facts = BlobFacts(store, read_whole_bytes=min(READ_WHOLE_BYTES, settings.max_blob_bytes),
                                disk=self.disk)
        # records None: progress is written nowhere. The heartbeat shows a long job's worker is alive.
        self._progress = ProgressWriter(records, heartbeat_seconds=settings.queue_visibility_seconds / 3)
        self._shared: dict[Key, _SharedMedia] = {}
        self._lock = threading.Lock()  # members, shared media, their claimants and words
        self._numbers = itertools.count()  # local file names are ours: m00000, m00001...
        # Publishing results and finishing jobs, off the threads that follow OpenFace.
        self._after = ThreadPoolExecutor(THREADS, thread_name_prefix="publish")
        self._busy = 0  # tasks given to _after and not yet done
        self._idle = threading.Condition()
        self._stack = contextlib.ExitStack()
        self._clock = _Clock()
        self.tmp = Path()

    def __enter__(self) -> "Batch":
        self.tmp = self._stack.enter_context(workspace())
        for folder in ("in", "out", "tables"):
            (self.tmp / folder).mkdir()
        # OpenFace reads in/ and writes out/, as a user of its own when sandboxed.
        for folder in (self.tmp, self.tmp / "out"):
            self.runner.sandbox.open_to(folder)
        self._facts.spool = self.tmp / "in"
        self._stack.enter_context(self._progress)
        return self

    def __exit__(self, *exc) -> None:
        self._drain()  # jobs whose media are all settled are reported, even when OpenFace was stopped
        self._after.shutdown()
        for item in self._shared.values():
            if item.owner is None and item.word is None:
                self.inflight.settle(item.key, Word(retry="the batch analysing it stopped"))
        self.started.set()
        self._stack.close()

    # -- before OpenFace -----------------------------------------------------

    def add(self, job: Job, order: int = 0) -> None:
        """Plan ``job`` and download the media it brings that no one has yet; blocks until done.

        ``order``: the job's place among the batch's, as the jobs came (jobs are added side by side).
        Its time cap (JOB_TIMEOUT_SECONDS) runs from here.
        """
        member = _Member(job, ResultWriter(job, self.store, JobProgress()), order,
                         deadline=time.monotonic() + self.settings.job_timeout_seconds)
        with _context(member):
            try:
                member.candidates = choose_media(job, self._facts, member.results, self.settings,
                                                 lambda blob: self.inflight.knows(shared_key(job, blob)),
                                                 self.disk.capacity())
                member.results.progress.expect_more(len(member.candidates))
            except JobFailed as exc:
                member.results.fail(str(exc))
            except ContainerNotFound:
                member.gone = True
            except AzureError as exc:
                member.retry_later(f"storage: {_first_line(exc)}")
            except OSError as exc:  # reading a small blob whole for its verdict: the disk is full
                member.wait_for_room(f"the worker's disk: {exc}")
        member.pending = len(member.candidates) + 1  # the last one is the job's own, dropped below
        with self._lock:
            self.members.append(member)
        self._progress.track(job, member.results.progress)
        for candidate in member.candidates:
            if candidate.problem:
                self._publish(member, candidate, *candidate.problem)
                self._settled(member)
            else:
                self._join(member, candidate)
        self._settled(member)

    def _join(self, member: _Member, candidate: Candidate) -> None:
        """Join the candidate to its blob version's shared media; the first to list it downloads it."""
        key = shared_key(member.job, candidate.blob)
        with self._lock:
            item = self._shared.get(key)
            new = item is None
            if new:
                item = self._shared[key] = _SharedMedia(key, candidate.blob, candidate.extension)
                _, theirs = self.inflight.claim([key])
                item.owner = theirs.get(key)
            item.claimants.append((member, candidate))
            word = item.word
        if word is not None:  # its word came before this job did
            self._take_word([(member, candidate)], word)
        elif new and item.owner is None:
            self._download(item)
        elif new and item.owner.done():  # published a moment ago by another batch: no need to wait
            self._conclude(item, item.owner.result(), owned=False)

    def _download(self, item: _SharedMedia) -> None:
        key = f"m{next(self._numbers):05d}"
        started = time.monotonic()
        path = None
        try:
            if item.extension is None:  # planned as in hand elsewhere, which it no longer is: judge it now
                verdict = self._facts.verdict(item.container, item.blob)
                if verdict.kind is None or not verdict.readable or verdict.kind.value != item.run_key[0]:
                    self._conclude(item, Word(retry="its analysis elsewhere in the worker did not finish"))
                    return
                item.extension = verdict.extension
            path = self.tmp / "in" / f"{key}.{item.extension}"
            copy = self._facts.take_copy(item.container, item.blob)  # read whole when it was judged
            if copy is not None:
                size = copy.rename(path).stat().st_size
            elif not self.disk.take(item.blob.size):
                self._conclude(item, Word(later=f"no room on the worker's disk for {item.blob.size} bytes now "
                                                "(DISK_RESERVE_BYTES kept free)"))
                return
            else:
                try:
                    size = self.store.download(item.container, item.blob, path)
                finally:
                    self.disk.give(item.blob.size)
        except BlobChanged:
            return self._conclude(item, Word(superseded=True))
        except ContainerNotFound:
            return self._conclude(item, Word(gone=True))
        except AzureError as exc:
            return self._conclude(item, Word(retry=f"could not download {item.blob.name}: {_first_line(exc)}"))
        except OSError as exc:  # the disk filled after all: not the media's fault
            if path is not None:
                path.unlink(missing_ok=True)
            return self._conclude(item, Word(later=f"could not write {item.blob.name} to the worker's disk: {exc}"))
        if item.run_key[0] == Media.IMAGE.value:
            problem = image_size_problem(path, self.settings.max_image_pixels)
            if problem:  # never shown to OpenFace
                path.unlink()
                self._publish_shared(item, FileResult(key, Outcome.TOO_LARGE, reason=problem), Media.IMAGE)
                return
        with self._lock:
            item.file = MediaFile(key, path, deadline=max(member.deadline for member, _ in item.claimants))
            claimants = list(item.claimants)
        for member, _ in claimants:
            member.steps["download_bytes"] += size
            member.steps["download_seconds"] += time.monotonic() - started

    def worth_a_process(self, images: int) -> bool:
        """Whether the media this batch will analyse are worth an OpenFace process: a video, or ``images`` images."""
        with self._lock:
            kinds = [item.run_key[0] for item in self._shared.values() if item.owner is None and item.word is None]
        return Media.VIDEO.value in kinds or len(kinds) >= images

    # -- OpenFace ------------------------------------------------------------

    def run(self) -> None:
        """Run OpenFace over the batch's media; each job is reported (``on_done``) as soon as its media are settled.

        Raises OpenFaceCancelled on shutdown: the jobs not yet reported are the caller's to hand back.
        """
        self._clock.lap("prepare")
        groups: dict[tuple, list[_SharedMedia]] = {}
        for item in self._shared.values():
            if item.file is not None and item.owner is None:
                groups.setdefault(item.run_key, []).append(item)
        for items in groups.values():
            self._run_group(items)
        self.started.set()  # OpenFace is done: the worker may take more while this batch finishes
        for item in self._shared.values():
            if item.owner is not None and item.word is None:
                self._conclude(item, self._wait_for(item.owner), owned=False)
        self._clock.lap("wait")
        self._drain()  # every job finished and reported
        self._clock.lap("finish")
        log.info("batch done", extra={"jobs": len(self.members), **self._clock.laps})

    def _run_group(self, items: list[_SharedMedia]) -> None:
        job = items[0].claimants[0][0].job
        media = Media(job.media)
        by_key = {item.file.key: item for item in items}
        self.runner.run(
            media, [item.file for item in items], self.tmp / "out", job.options, self.cancel, self.started,
            # Each media's results are published as soon as OpenFace has finished it.
            on_result=lambda result: self._later(self._publish_shared, by_key[result.key], result, media),
            executable=job.option_set.executable(media),
            on_progress=lambda key, percent: self._report_progress(by_key[key], percent))
        seconds = self._clock.lap("openface")
        for member in {id(member): member for item in items for member, _ in item.claimants}.values():
            member.steps["openface_seconds"] += seconds

    def _wait_for(self, future: Future) -> Word:
        """Another batch's word on a blob version, as soon as it comes; shutdown does not wait."""
        stopping = self.cancel or threading.Event()
        while True:
            try:
                word = future.result(timeout=0.5)
            except TimeoutError:
                if stopping.is_set():
                    raise OpenFaceCancelled("worker is shutting down") from None
                continue
            if word.retry and stopping.is_set():
                raise OpenFaceCancelled("worker is shutting down")  # the other batch was stopped
            return word

    # -- after OpenFace ------------------------------------------------------

    def _later(self, fn, *args) -> None:
        with self._idle:
            self._busy += 1
        self._after.submit(contextvars.copy_context().run, self._task, fn, *args)

    def _task(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # its jobs are never reported: the worker retries them
            log.exception("unexpected error while publishing")
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _drain(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0)

    def _report_progress(self, item: _SharedMedia, percent: int) -> None:
        for member, candidate in item.claimants:
            member.results.progress.percent(candidate.blob.name, percent)

    def _conclude(self, item: _SharedMedia, word: Word, owned: bool = True) -> None:
        """The blob version's word is in: give it to the jobs waiting on it (and to other batches)."""
        with self._lock:
            item.word = word
            claimants = list(item.claimants)
        if owned:
            self.inflight.settle(item.key, word)
        self._take_word(claimants, word)

    def _take_word(self, claimants: list[tuple[_Member, Candidate]], word: Word) -> None:
        for member, candidate in claimants:
            with _context(member, candidate.blob):
                if word.retry:
                    member.retry_later(word.retry)
                elif word.later:
                    member.wait_for_room(word.later)
                elif word.gone:
                    member.gone = True
                elif word.superseded:
                    member.results.record(candidate.blob, SUPERSEDED, "the blob changed after the job was created")
                else:
                    member.results.record(candidate.blob, word.status, f"analysed by job {word.job_id}, "
                                          "in another batch of this worker", word.outputs, csv=word.csv)
            self._settled(member)

    def _publish_shared(self, item: _SharedMedia, result: FileResult, media: Media) -> None:
        """One media's result, for every job that listed it: uploaded once per output name."""
        if result.outcome is Outcome.CRASHED:
            self._conclude(item, Word(retry=result.reason))
            return
        settled = _settle(result, media, item.blob.name, self.settings.face_confidence_threshold)
        published: dict[str, tuple[str, list[str]]] = {}  # stem -> (job id, outputs)
        word = None
        for member, candidate in sorted(item.claimants, key=lambda claimant: claimant[0].order):
            if candidate.stem in published:
                job_id, outputs = published[candidate.stem]
                with _context(member, candidate.blob):
                    member.results.record(candidate.blob, settled.status, f"analysed by job {job_id}, in the same "
                                          "OpenFace run", outputs, csv=settled.files.get("csv"),
                                          analysed_by=settled.analysed_by)
            else:
                outputs = self._publish(member, candidate, settled.status, settled.reason, files=settled.files,
                                        stats=settled.stats, plot_error=settled.plot_error,
                                        analysed_by=settled.analysed_by)
                if outputs:
                    published[candidate.stem] = (member.job.job_id, outputs)
                    word = word or Word(settled.status, settled.reason, outputs, member.job.job_id,
                                        csv=_small_csv(settled.files.get("csv"), media))
        if word is None:  # no claimant could write its results
            retries = [member.retry for member, _ in item.claimants if member.retry]
            waits = [member.later for member, _ in item.claimants if member.later]
            word = Word(retry=retries[0]) if retries else Word(later=waits[0]) if waits else Word(gone=True)
        with self._lock:
            item.word = word
        self.inflight.settle(item.key, word)
        for member, _ in item.claimants:
            self._settled(member)

    def _publish(self, member: _Member, candidate: Candidate, status: str, reason: str | None,
                 **files) -> list[str]:
        with _context(member):
            try:
                return member.results.publish(candidate.blob, candidate.stem, status, reason, **files)
            except ContainerNotFound:
                member.gone = True
            except AzureError as exc:
                member.retry_later(f"could not write the results of {candidate.blob.name}: {_first_line(exc)}")
        return []

    def _settled(self, member: _Member) -> None:
        """One more of the job's media has its outcome; after the last, the job is finished and reported."""
        with self._lock:
            member.pending -= 1
            last = member.pending == 0
        if last:
            self._later(self._report, member)

    def _report(self, member: _Member) -> None:
        self._progress.retire(member.job.job_id)  # the job's next record write is its settling
        outcome = self._finish(member, self.tmp / "tables")
        with _context(member):
            try:
                self.on_done(member.job, outcome)
            except Exception:
                log.exception("could not settle the job")


    def _finish(self, member: _Member, tables: Path) -> JobReport | RetryLater:
        with _context(member):
            if member.retry:
                return RetryLater(member.retry)
            if member.later:
                return RetryLater(member.later, spent=False)
            results = member.results
            if not member.gone:
                try:
                    if member.job.media == Media.IMAGE.value:
                        results.write_table(tables)
                    results.write_manifest()
                except ContainerNotFound:
                    member.gone = True
                except AzureError as exc:
                    return RetryLater(f"could not write the job manifest: {_first_line(exc)}")
            if member.gone:
                results.fail(f"container '{member.job.container}' no longer exists")
        report = results.report
        report.steps = {**{k: round(v, 3) for k, v in member.steps.items()},
                        "upload_bytes": results.uploaded_bytes, "upload_seconds": round(results.upload_seconds, 3),
                        "batch_jobs": len(self.members)}
        return report


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


@dataclass
class _Settled:
    """What becomes of one OpenFace result: its status, the files to upload, its summary."""

    status: str
    reason: str | None = None
    files: dict[str, Path] = field(default_factory=dict)  # by output_names key
    stats: dict | None = None
    plot_error: str | None = None
    analysed_by: str | None = None  # "engine" or "cli"


def _settle(result: FileResult, media: Media, source: str, confidence_threshold: float) -> _Settled:
    files = {"details": result.details} if result.details else {}
    for name, path in result.extras.items():
        if name != "aligned":
            files[name] = path
        elif any(path.iterdir()):  # OpenFace leaves an empty folder when it aligned no face
            files[name] = zip_folder(path, path.with_suffix(".zip"))
    by = result.analysed_by
    if result.outcome is not Outcome.ANALYSED:
        return _Settled(result.outcome.value, result.reason, files, analysed_by=by)
    is_video = media is Media.VIDEO
    try:
        stats = summarise(result.csv, is_video, confidence_threshold=confidence_threshold)
    except InvalidCsv as exc:
        # OpenFace wrote something we cannot read: say so rather than pass it on.
        return _Settled(FAILED, f"OpenFace's CSV is malformed: {exc}", analysed_by=by)
    files["csv"] = result.csv
    if not has_face(stats, is_video):
        return _Settled(Outcome.NO_FACE.value, "OpenFace found no face in any frame", files, stats, analysed_by=by)
    settled = _Settled(Outcome.ANALYSED.value, None, files, stats, analysed_by=by)
    if is_video:
        png = result.csv.with_suffix(".png")
        try:
            draw_video(result.csv, png, source)
            files["plot"] = png
        except Exception as exc:  # a picture is a bonus: never fail the media for it
            log.warning("could not draw the plot", extra={"blob": source, "error": repr(exc)})
            settled.plot_error = f"{type(exc).__name__}: {exc}"[:500]
    return settled


# An image's CSV is a row per face: kept in its word, other batches' job tables need not download it.
_WORD_CSV_BYTES = 1 << 20


def _small_csv(path: Path | None, media: Media) -> bytes | None:
    if media is not Media.IMAGE or path is None or path.stat().st_size > _WORD_CSV_BYTES:
        return None
    return path.read_bytes()


def shared_key(job: Job, blob: BlobInput) -> Key:
    """What makes one analysis serve several jobs: the blob version, the media kind and options; a job
    that runs alone shares with no one."""
    return (job.container, blob.name, blob.etag, job.media, job.faces, tuple(job.options),
            job.job_id if job.runs_alone else "")


def _context(member: _Member, blob: BlobInput | None = None):
    return log_context(job_id=member.job.job_id, container=member.job.container, blob=blob.name if blob else None)


def _first_line(exc: Exception) -> str:
    """Storage errors carry the whole response; one line says enough."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
