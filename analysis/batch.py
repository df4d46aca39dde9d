"""A batch: the jobs a worker took off the queue together, run with as few OpenFace runs as possible.

Jobs are grouped by media kind and OpenFace options. A group's media go
through one runner call (as many OpenFace processes as pay and are free),
each blob version once however many jobs list it, as the jobs of uploads
trickling into one container do; a version another batch of the worker is
analysing at the same time is left to it (analysis/inflight.py). Every job
still gets its own result blobs, manifest and report. What goes wrong with
one job's media stays with that job: an unreadable or too large file is that
job's outcome, and a crash of OpenFace sends back only the jobs whose media
it had not finished.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from azure.core.exceptions import AzureError

from analysis.analyse import (
    FAILED, SUPERSEDED, BlobFacts, Candidate, JobFailed, JobReport, ResultWriter, choose_media,
)
from analysis.config import Settings
from analysis.inflight import InFlight, Key, Word
from analysis.job import Job, JobStore
from analysis.logs import log_context
from analysis.openface import FileResult, MediaFile, OpenFaceCancelled, OpenFaceRunner, Outcome
from analysis.outputs import zip_folder
from analysis.parallel import each
from analysis.plot import draw_video
from analysis.progress import JobProgress, ProgressWriter
from analysis.storage import BlobChanged, BlobInput, ContainerNotFound, MediaStore
from analysis.summary import InvalidCsv, has_face, summarise
from analysis.workspace import workspace
from media_rules import Media

log = logging.getLogger(__name__)


@dataclass
class RetryLater:
    """The job's attempt failed for a reason that may pass: try it again."""

    reason: str


@dataclass
class _Member:
    """One job of the batch and what has become of it."""

    job: Job
    results: ResultWriter
    candidates: list[Candidate] = field(default_factory=list)
    retry: str | None = None  # why the job must be tried again
    gone: bool = False  # its container was deleted: no blob can be written
    steps: dict = field(default_factory=lambda: defaultdict(float))

    def retry_later(self, reason: str) -> None:
        self.retry = self.retry or reason


@dataclass
class _SharedMedia:
    """One blob version that jobs of a group need OpenFace's result for."""

    container: str
    blob: BlobInput
    extension: str
    claimants: list[tuple[_Member, Candidate]] = field(default_factory=list)
    file: MediaFile | None = None
    word: Word | None = None  # how its analysis went, for batches that wait on it


class Batch:
    def __init__(self, jobs: list[Job], store: MediaStore, runner: OpenFaceRunner, settings: Settings,
                 inflight: InFlight | None = None, cancel: threading.Event | None = None,
                 started: threading.Event | None = None, records: JobStore | None = None):
        self.jobs = jobs
        self.records = records  # where progress is written while the batch runs; None: nowhere
        self.store = store
        self.runner = runner
        self.settings = settings
        self.inflight = inflight or InFlight()
        self.cancel = cancel
        self.started = started or threading.Event()  # set once OpenFace has its slots, or is not needed
        self._numbers = itertools.count()  # local file names are ours: m00000, m00001...

    def run(self) -> dict[str, JobReport | RetryLater]:
        """Each job's report, or why it should be retried. Raises OpenFaceCancelled on shutdown."""
        clock = _Clock()
        try:
            facts = BlobFacts(self.store)
            members = each(lambda job: self._plan(job, facts), self.jobs)
            clock.lap("plan")
            with workspace() as tmp:
                for folder in ("in", "out", "tables"):
                    (tmp / folder).mkdir()
                with ProgressWriter(self.records, [(member.job, member.results.progress) for member in members]):
                    for group in self._groups(members):
                        self._run_group(group, tmp, clock)
                self.started.set()  # OpenFace is done: the worker may take more while this batch finishes
                outcomes = dict(zip([member.job.job_id for member in members],
                                    each(lambda member: self._finish(member, tmp / "tables"), members)))
        finally:
            self.started.set()
        clock.lap("finish")
        log.info("batch done", extra={"jobs": len(self.jobs), **clock.laps})
        return outcomes

    # -- before OpenFace -----------------------------------------------------

    def _plan(self, job: Job, facts: BlobFacts) -> _Member:
        member = _Member(job, ResultWriter(job, self.store, JobProgress()))
        with _context(member):
            try:
                member.candidates = choose_media(job, facts, member.results, self.settings)
                member.results.progress.expect_more(len(member.candidates))
            except JobFailed as exc:
                member.results.fail(str(exc))
            except ContainerNotFound:
                member.gone = True
            except AzureError as exc:
                member.retry_later(f"storage: {_first_line(exc)}")
        return member

    @staticmethod
    def _groups(members: list[_Member]) -> list[list[_Member]]:
        """Jobs that can share OpenFace runs: same kind and options; a job on its own if it must be."""
        groups: dict[tuple, list[_Member]] = {}
        for member in members:
            job = member.job
            key = (job.media, job.faces, tuple(job.options), job.job_id if job.runs_alone else None)
            groups.setdefault(key, []).append(member)
        return list(groups.values())

    def _run_group(self, members: list[_Member], tmp: Path, clock: "_Clock") -> None:
        job = members[0].job
        shared: dict[Key, _SharedMedia] = {}
        for member in members:
            for candidate in member.candidates:
                if candidate.problem:
                    self._publish(member, candidate, *candidate.problem)
                    continue
                key = (member.job.container, candidate.blob.name, candidate.blob.etag, job.media, job.faces,
                       tuple(job.options))
                item = shared.setdefault(key, _SharedMedia(key[0], candidate.blob, candidate.extension))
                item.claimants.append((member, candidate))
        mine, theirs = self.inflight.claim(list(shared))
        try:
            own = [shared[key] for key in shared if key in mine]
            clock.lap("publish")
            files = [item.file for item, ok in zip(own, each(lambda item: self._download(item, tmp / "in"), own))
                     if ok]
            clock.lap("download")
            if files:
                by_key = {item.file.key: item for item in own if item.file is not None}
                media = Media(job.media)
                # Each media's results are published as soon as OpenFace has finished it.
                self.runner.run(media, files, tmp / "out", job.options, self.cancel, self.started,
                                on_result=lambda result: self._publish_shared(by_key[result.key], result, media),
                                executable=job.option_set.executable(media),
                                on_progress=lambda key, percent: self._report_progress(by_key[key], percent))
                seconds = clock.lap("openface")
                for member in members:
                    member.steps["openface_seconds"] += seconds
            for key, future in theirs.items():
                self._take_word(shared[key], self._wait_for(future))
            clock.lap("wait")
        finally:
            for key in mine:
                self.inflight.settle(key, shared[key].word or Word(retry="the batch analysing it stopped"))

    def _wait_for(self, future) -> Word:
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

    def _take_word(self, item: _SharedMedia, word: Word) -> None:
        for member, candidate in item.claimants:
            with _context(member, candidate.blob):
                if word.retry:
                    member.retry_later(word.retry)
                elif word.gone:
                    member.gone = True
                elif word.superseded:
                    member.results.record(candidate.blob, SUPERSEDED, "the blob changed after the job was created")
                else:
                    member.results.record(candidate.blob, word.status, f"analysed by job {word.job_id}, "
                                          "at the same time", word.outputs)

    def _download(self, item: _SharedMedia, in_dir: Path) -> bool:
        key = f"m{next(self._numbers):05d}"
        path = in_dir / f"{key}.{item.extension}"
        started = time.monotonic()
        try:
            size = self.store.download(item.container, item.blob, path)
        except BlobChanged:
            item.word = Word(superseded=True)
        except ContainerNotFound:
            item.word = Word(gone=True)
        except AzureError as exc:
            item.word = Word(retry=f"could not download {item.blob.name}: {_first_line(exc)}")
        if item.word is not None:
            self._take_word(item, item.word)
            return False
        for member, _ in item.claimants:
            member.steps["download_bytes"] += size
            member.steps["download_seconds"] += time.monotonic() - started
        item.file = MediaFile(key, path)
        return True

    # -- after OpenFace ------------------------------------------------------

    def _report_progress(self, item: _SharedMedia, percent: int) -> None:
        for member, candidate in item.claimants:
            member.results.progress.percent(candidate.blob.name, percent)

    def _publish_shared(self, item: _SharedMedia, result: FileResult, media: Media) -> None:
        """One media's result, for every job that listed it: uploaded once per output name."""
        if result.outcome is Outcome.CRASHED:
            item.word = Word(retry=result.reason)
            self._take_word(item, item.word)
            return
        settled = _settle(result, media, item.blob.name, self.settings.face_confidence_threshold)
        published: dict[str, tuple[str, list[str]]] = {}  # stem -> (job id, outputs)
        for member, candidate in item.claimants:
            if candidate.stem in published:
                job_id, outputs = published[candidate.stem]
                with _context(member, candidate.blob):
                    member.results.record(candidate.blob, settled.status, f"analysed by job {job_id}, in the same "
                                          "OpenFace run", outputs, csv=settled.files.get("csv"))
                continue
            outputs = self._publish(member, candidate, settled.status, settled.reason, files=settled.files,
                                    stats=settled.stats, plot_error=settled.plot_error)
            if outputs:
                published[candidate.stem] = (member.job.job_id, outputs)
                item.word = item.word or Word(settled.status, settled.reason, outputs, member.job.job_id)
        if item.word is None:  # no claimant could write its results
            reasons = [member.retry for member, _ in item.claimants if member.retry]
            item.word = Word(retry=reasons[0]) if reasons else Word(gone=True)

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

    def _finish(self, member: _Member, tables: Path) -> JobReport | RetryLater:
        with _context(member):
            if member.retry:
                return RetryLater(member.retry)
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
                        "batch_jobs": len(self.jobs)}
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


def _settle(result: FileResult, media: Media, source: str, confidence_threshold: float) -> _Settled:
    files = {"details": result.details} if result.details else {}
    for name, path in result.extras.items():
        if name != "aligned":
            files[name] = path
        elif any(path.iterdir()):  # OpenFace leaves an empty folder when it aligned no face
            files[name] = zip_folder(path, path.with_suffix(".zip"))
    if result.outcome is not Outcome.ANALYSED:
        return _Settled(result.outcome.value, result.reason, files)
    is_video = media is Media.VIDEO
    try:
        stats = summarise(result.csv, is_video, confidence_threshold=confidence_threshold)
    except InvalidCsv as exc:
        # OpenFace wrote something we cannot read: say so rather than pass it on.
        return _Settled(FAILED, f"OpenFace's CSV is malformed: {exc}")
    files["csv"] = result.csv
    if not has_face(stats, is_video):
        return _Settled(Outcome.NO_FACE.value, "OpenFace found no face in any frame", files, stats)
    settled = _Settled(Outcome.ANALYSED.value, None, files, stats)
    if is_video:
        png = result.csv.with_suffix(".png")
        try:
            draw_video(result.csv, png, source)
            files["plot"] = png
        except Exception as exc:  # a picture is a bonus: never fail the media for it
            log.warning("could not draw the plot", extra={"blob": source, "error": repr(exc)})
            settled.plot_error = f"{type(exc).__name__}: {exc}"[:500]
    return settled


def _context(member: _Member, blob: BlobInput | None = None):
    return log_context(job_id=member.job.job_id, container=member.job.container, blob=blob.name if blob else None)


def _first_line(exc: Exception) -> str:
    """Storage errors carry the whole response; one line says enough."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
