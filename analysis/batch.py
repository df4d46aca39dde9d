"""A batch: the jobs a worker took off the queue together, run with as few OpenFace runs as possible.

Jobs are grouped by media kind and OpenFace options. A group's media go
through one runner call (shared among up to OPENFACE_PROCESSES processes),
each blob version once however many jobs list it, as the jobs of uploads
trickling into one container do. Every job still gets its own result blobs,
manifest and report. What goes wrong with one job's media stays with that
job: an unreadable or too large file is that job's outcome, and a crash of
OpenFace sends back only the jobs whose media it had not finished.
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
from analysis.job import Job
from analysis.logs import log_context
from analysis.openface import FileResult, MediaFile, OpenFaceRunner, Outcome
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


class Batch:
    def __init__(self, jobs: list[Job], store: MediaStore, runner: OpenFaceRunner, settings: Settings,
                 cancel: threading.Event | None = None):
        self.jobs = jobs
        self.store = store
        self.runner = runner
        self.settings = settings
        self.cancel = cancel
        self._keys = (f"m{number:05d}" for number in itertools.count())  # local names are ours

    def run(self) -> dict[str, JobReport | RetryLater]:
        """Each job's report, or why it should be retried. Raises OpenFaceCancelled on shutdown."""
        facts = BlobFacts(self.store)
        members = [self._plan(job, facts) for job in self.jobs]
        with workspace() as tmp:
            (tmp / "in").mkdir()
            (tmp / "out").mkdir()
            for group in self._groups(members):
                self._run_group(group, tmp)
        return {member.job.job_id: self._finish(member) for member in members}

    # -- before OpenFace -----------------------------------------------------

    def _plan(self, job: Job, facts: BlobFacts) -> _Member:
        member = _Member(job, ResultWriter(job, self.store))
        with _context(member):
            try:
                member.candidates = choose_media(job, facts, member.results, self.settings)
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
            key = (job.media, tuple(job.options), job.job_id if job.runs_alone else None)
            groups.setdefault(key, []).append(member)
        return list(groups.values())

    def _run_group(self, members: list[_Member], tmp: Path) -> None:
        shared: dict[tuple[str, str, str], _SharedMedia] = {}
        for member in members:
            for candidate in member.candidates:
                if candidate.problem:
                    self._publish(member, candidate, *candidate.problem)
                    continue
                key = (member.job.container, candidate.blob.name, candidate.blob.etag)
                item = shared.setdefault(key, _SharedMedia(key[0], candidate.blob, candidate.extension))
                item.claimants.append((member, candidate))
        files = [item.file for item in shared.values() if self._download(item, tmp / "in")]
        if not files:
            return
        job = members[0].job
        started = time.monotonic()
        results = {result.key: result for result in
                   self.runner.run(Media(job.media), files, tmp / "out", job.options, self.cancel)}
        seconds = time.monotonic() - started
        for member in members:
            member.steps["openface_seconds"] += seconds
        for item in shared.values():
            if item.file is not None:
                self._publish_shared(item, results[item.file.key], Media(job.media))

    def _download(self, item: _SharedMedia, in_dir: Path) -> bool:
        key = next(self._keys)
        path = in_dir / f"{key}.{item.extension}"
        started = time.monotonic()
        try:
            size = self.store.download(item.container, item.blob, path)
        except BlobChanged:
            for member, candidate in item.claimants:
                with _context(member, candidate.blob):
                    member.results.record(candidate.blob, SUPERSEDED, "the blob changed after the job was created")
            return False
        except ContainerNotFound:
            for member, _ in item.claimants:
                member.gone = True
            return False
        except AzureError as exc:
            for member, _ in item.claimants:
                member.retry_later(f"could not download {item.blob.name}: {_first_line(exc)}")
            return False
        for member, _ in item.claimants:
            member.steps["download_bytes"] += size
            member.steps["download_seconds"] += time.monotonic() - started
        item.file = MediaFile(key, path)
        return True

    # -- after OpenFace ------------------------------------------------------

    def _publish_shared(self, item: _SharedMedia, result: FileResult, media: Media) -> None:
        """One media's result, for every job that listed it: uploaded once per output name."""
        if result.outcome is Outcome.CRASHED:
            for member, _ in item.claimants:
                member.retry_later(result.reason)
            return
        status, reason, files, stats = _settle(result, media)
        published: dict[str, tuple[str, list[str]]] = {}  # stem -> (job id, outputs)
        for member, candidate in item.claimants:
            if candidate.stem in published:
                job_id, outputs = published[candidate.stem]
                with _context(member, candidate.blob):
                    member.results.record(candidate.blob, status, f"analysed by job {job_id}, in the same "
                                          "OpenFace run", outputs)
                continue
            outputs = self._publish(member, candidate, status, reason, stats=stats, **files)
            if outputs:
                published[candidate.stem] = (member.job.job_id, outputs)

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

    def _finish(self, member: _Member) -> JobReport | RetryLater:
        with _context(member):
            if member.retry:
                return RetryLater(member.retry)
            results = member.results
            if not member.gone:
                try:
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


def _settle(result: FileResult, media: Media) -> tuple[str, str | None, dict, dict | None]:
    """(status, reason, files to upload, summary) of one OpenFace result."""
    if result.outcome is not Outcome.ANALYSED:
        return result.outcome.value, result.reason, {"details": result.details}, None
    is_video = media is Media.VIDEO
    try:
        stats = summarise(result.csv, is_video)
    except InvalidCsv as exc:
        # OpenFace wrote something we cannot read: say so rather than pass it on.
        return FAILED, f"OpenFace's CSV is malformed: {exc}", {}, None
    if has_face(stats, is_video):
        return Outcome.ANALYSED.value, None, {"csv": result.csv, "details": result.details}, stats
    reason = "OpenFace found no face in any frame"
    return Outcome.NO_FACE.value, reason, {"csv": result.csv, "details": result.details}, stats


def _context(member: _Member, blob: BlobInput | None = None):
    return log_context(job_id=member.job.job_id, container=member.job.container, blob=blob.name if blob else None)


def _first_line(exc: Exception) -> str:
    """Storage errors carry the whole response; one line says enough."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
