"""The work of one job: pick the media, fetch them, run OpenFace once, upload results.

Every media blob the job takes on gets ``processed/<stem>.summary.json``
whatever happens to it, and every finished job gets
``processed/_jobs/<job_id>.json``; both are written last, so a reader that
sees them can rely on the CSV (if any) already being there.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from analysis.config import Settings
from analysis.job import Job, JobStatus
from analysis.logs import log_context
from analysis.names import blob_name_problem, job_manifest_name, output_names, output_stems
from analysis.openface import FileResult, MediaFile, OpenFaceRunner, Outcome
from analysis.storage import BlobChanged, BlobInput, ContainerNotFound, MediaStore, metadata_value
from analysis.summary import InvalidCsv, has_face, summarise
from media_rules import SNIFF_BYTES, Media, claimed_kind, judge

log = logging.getLogger(__name__)

# Media outcomes besides OpenFace's own (analysed, no_face, unreadable).
TOO_LARGE = "too_large"
FAILED = "failed"
SUPERSEDED = "superseded"  # the blob changed after the job was created; a newer job covers it
SKIPPED = "skipped"  # not this job's kind of media; no result blob
# Outcomes that depend only on the blob's content and the options, so they hold for a later job.
REUSABLE = {Outcome.ANALYSED.value, Outcome.NO_FACE.value, Outcome.UNREADABLE.value}


def article(media: Media) -> str:
    return f"{'an' if media is Media.IMAGE else 'a'} {media.value}"


class JobFailed(RuntimeError):
    """The job cannot succeed however often it is tried; the message says why."""


@dataclass
class JobReport:
    status: JobStatus
    results: list[dict] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for item in self.results:
            counts[item["status"]] = counts.get(item["status"], 0) + 1
        return {"media": sum(v for k, v in counts.items() if k != SKIPPED), "by_status": counts}


@dataclass
class _Candidate:
    blob: BlobInput
    stem: str
    extension: str | None  # set when the content is this job's kind of media
    problem: tuple[str, str] | None = None  # (outcome, reason) decided before OpenFace


class ResultWriter:
    """Uploads a job's result blobs and keeps its report."""

    def __init__(self, job: Job, store: MediaStore):
        self.job = job
        self.store = store
        self.report = JobReport(JobStatus.SUCCEEDED)

    def metadata(self, blob: BlobInput) -> dict[str, str]:
        return {
            "job_id": self.job.job_id,
            "source_blob": metadata_value(blob.name),
            "source_etag": blob.etag,
            "media": self.job.media,
            "openface_options": " ".join(self.job.options),
        }

    def publish(self, blob: BlobInput, stem: str, status: str, reason: str | None,
                csv: Path | None = None, details: Path | None = None, stats: dict | None = None) -> None:
        """Upload a media blob's outputs, its summary last."""
        names = output_names(stem)
        metadata = self.metadata(blob)
        written = []
        with log_context(blob=blob.name):
            for key, path, content_type in (("csv", csv, "text/csv"), ("details", details, "text/plain")):
                if path is not None:
                    self.store.upload_file(self.job.container, names[key], path, metadata, content_type)
                    written.append(names[key])
            document = {
                "job_id": self.job.job_id,
                "source_blob": blob.name,
                "source_etag": blob.etag,
                "media": self.job.media,
                "media_type": self.job.media_type,
                "openface_options": self.job.options,
                "status": status,
                "reason": reason,
                "outputs": written,
                "summary": stats,
            }
            self.store.upload_json(self.job.container, names["summary"], document, {**metadata, "status": status})
            written.append(names["summary"])
            log.info("media %s", status, extra={"reason": reason})
        self.report.outputs += written
        self.report.results.append({"blob": blob.name, "status": status, "reason": reason, "outputs": written})

    def record(self, blob: BlobInput, status: str, reason: str, outputs: list[str] | None = None) -> None:
        """Note a media's outcome without uploading anything."""
        log.info("media %s", status, extra={"reason": reason, "blob": blob.name})
        self.report.outputs += outputs or []
        self.report.results.append({"blob": blob.name, "status": status, "reason": reason, "outputs": outputs or []})

    def skip(self, blob: BlobInput, reason: str) -> None:
        self.record(blob, SKIPPED, reason)

    def fail(self, reason: str) -> None:
        self.report.status = JobStatus.FAILED
        self.report.error = reason
        log.warning("job failed: %s", reason)

    def write_manifest(self) -> None:
        name = job_manifest_name(self.job.job_id)
        document = {
            "job_id": self.job.job_id,
            "container": self.job.container,
            "media": self.job.media,
            "media_type": self.job.media_type,
            "status": self.report.status.value,
            "error": self.report.error,
            "results": self.report.results,
            "outputs": self.report.outputs,
            "summary": self.report.summary,
        }
        self.store.upload_json(
            self.job.container, name, document,
            {"job_id": self.job.job_id, "status": self.report.status.value},
        )
        self.report.outputs.append(name)


class Analysis:
    def __init__(self, job: Job, store: MediaStore, runner: OpenFaceRunner, settings: Settings):
        self.job = job
        self.store = store
        self.runner = runner
        self.settings = settings
        self.media = Media(job.media)
        self.results = ResultWriter(job, store)

    def run(self, cancel: threading.Event | None = None) -> JobReport:
        """Returns the report of a finished job; raises on errors worth retrying."""
        try:
            candidates = self._select()
            if not candidates:
                raise JobFailed(
                    f"no {self.media.value} found in container '{self.job.container}' "
                    f"({len(self.job.inputs)} blob(s) outside processed/ checked)"
                )
            with tempfile.TemporaryDirectory(prefix="openface-job-") as tmp:
                self._analyse(candidates, Path(tmp), cancel)
        except ContainerNotFound:
            self.results.fail(f"container '{self.job.container}' no longer exists")
            return self.results.report  # nowhere to write result blobs
        except JobFailed as exc:
            self.results.fail(str(exc))
        self.results.write_manifest()
        return self.results.report

    # -- choosing media -------------------------------------------------------

    def _select(self) -> list[_Candidate]:
        blobs = self.job.blob_inputs
        stems = output_stems([b.name for b in blobs])
        chosen = []
        for blob in blobs:
            with log_context(blob=blob.name):
                candidate = self._classify(blob, stems[blob.name])
            if candidate is not None:
                chosen.append(candidate)
        return chosen

    def _classify(self, blob: BlobInput, stem: str) -> _Candidate | None:
        problem = blob_name_problem(blob.name)
        if problem:
            self.results.skip(blob, problem)
            return None
        if self._reuse(blob, stem):
            return None
        try:
            verdict = judge(blob.name, blob.content_type, self.store.read_head(self.job.container, blob, SNIFF_BYTES))
        except BlobChanged:
            self.results.record(blob, SUPERSEDED, "the blob changed after the job was created")
            return None
        if verdict.kind is not self.media:
            found = f" (its content is {article(verdict.kind)}; {verdict.kind.value} jobs analyse it)" if verdict.kind else ""
            self.results.skip(blob, f"not {self.media.value} content{found}")
            return None
        if blob.size > self.settings.max_blob_bytes:
            return _Candidate(blob, stem, None, (
                TOO_LARGE,
                f"{blob.size} bytes is over the limit of {self.settings.max_blob_bytes} (MAX_BLOB_BYTES)",
            ))
        if not verdict.readable:
            # Named like our media but is not: the uploader expects an answer.
            what = "the file is empty" if blob.size == 0 else f"the content is not {article(self.media)} format OpenFace reads"
            return _Candidate(blob, stem, None, (Outcome.UNREADABLE.value, what))
        return _Candidate(blob, stem, verdict.extension)

    def _reuse(self, blob: BlobInput, stem: str) -> bool:
        """Take an earlier job's result for this exact blob version and options, if any.

        Each upload to a container starts a job over all of its blobs; this
        keeps those overlapping jobs from analysing a blob version twice.
        """
        names = output_names(stem)
        earlier = self.store.metadata(self.job.container, names["summary"])
        if not earlier or earlier.get("status") not in REUSABLE:
            return False
        same = {"source_etag": blob.etag, "media": self.job.media, "openface_options": " ".join(self.job.options)}
        if any(earlier.get(key) != value for key, value in same.items()):
            return False
        outputs = {
            Outcome.ANALYSED.value: [names["csv"], names["details"]],
            Outcome.NO_FACE.value: [names["details"]],
        }.get(earlier["status"], []) + [names["summary"]]
        self.results.record(blob, earlier["status"], f"already analysed by job {earlier.get('job_id')}", outputs)
        return True

    # -- analysing ------------------------------------------------------------

    def _analyse(self, candidates: list[_Candidate], tmp: Path, cancel: threading.Event | None) -> None:
        in_dir, out_dir = tmp / "in", tmp / "out"
        in_dir.mkdir()
        out_dir.mkdir()
        files: dict[str, _Candidate] = {}
        for candidate in candidates:
            if candidate.problem:
                self._publish(candidate, *candidate.problem)
                continue
            # Local names are ours; the blob name never touches the file system.
            key = f"m{len(files):05d}"
            path = in_dir / f"{key}.{candidate.extension}"
            with log_context(blob=candidate.blob.name):
                try:
                    self.store.download(self.job.container, candidate.blob, path)
                except BlobChanged:
                    self.results.record(candidate.blob, SUPERSEDED, "the blob changed after the job was created")
                    continue
            files[key] = candidate
        if not files:
            return
        results = self.runner.run(
            self.media,
            [MediaFile(key, in_dir / f"{key}.{c.extension}") for key, c in files.items()],
            out_dir,
            self.job.options,
            cancel,
        )
        for result in results:
            self._publish_result(files[result.key], result)

    def _publish(self, candidate: _Candidate, status: str, reason: str | None, **files) -> None:
        self.results.publish(candidate.blob, candidate.stem, status, reason, **files)

    def _publish_result(self, candidate: _Candidate, result: FileResult) -> None:
        if result.outcome is not Outcome.ANALYSED:
            self._publish(candidate, result.outcome.value, result.reason, details=result.details)
            return
        is_video = self.media is Media.VIDEO
        try:
            stats = summarise(result.csv, is_video)
        except InvalidCsv as exc:
            # OpenFace wrote something we cannot read: say so rather than pass it on.
            self._publish(candidate, FAILED, f"OpenFace's CSV is malformed: {exc}")
            return
        outcome = Outcome.ANALYSED if has_face(stats, is_video) else Outcome.NO_FACE
        reason = None if outcome is Outcome.ANALYSED else "OpenFace found no face in any frame"
        self._publish(candidate, outcome.value, reason, csv=result.csv, details=result.details, stats=stats)


def write_failure(job: Job, store: MediaStore, reason: str) -> JobReport:
    """Result blobs for a job given up on (poisoned) without running it again.

    Media are chosen by what the uploader claimed (content type or extension),
    since nothing is downloaded here.
    """
    media = Media(job.media)
    writer = ResultWriter(job, store)
    writer.fail(reason)
    blobs = [b for b in job.blob_inputs
             if not blob_name_problem(b.name) and claimed_kind(b.name, b.content_type) is media]
    stems = output_stems([b.name for b in blobs])
    try:
        for blob in blobs:
            writer.publish(blob, stems[blob.name], FAILED, reason)
        writer.write_manifest()
    except ContainerNotFound:
        pass
    return writer.report
