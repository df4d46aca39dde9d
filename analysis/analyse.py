"""One job's share of a batch: which of its blobs OpenFace must see, and publishing its results.

Every media blob the job takes on gets ``processed/<stem>.summary.json``
whatever happens to it, and every finished job gets
``processed/_jobs/<job_id>.json``; both are written last, so a reader that
sees them can rely on the CSV (if any) already being there.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import imagesize

from analysis.config import Settings
from analysis.disk import DiskBudget
from analysis.inflight import RECENT_SECONDS
from analysis.job import Job, JobStatus
from analysis.logs import log_context
from analysis.names import (
    PROCESSED_PREFIX, blob_name_problem, job_manifest_name, job_table_name, output_names, output_stems,
)
from analysis.openface import Outcome
from analysis.options import Options
from analysis.outputs import details_text, write_table
from analysis.parallel import Once
from analysis.progress import JobProgress
from analysis.storage import BlobChanged, BlobInput, ContainerNotFound, MediaStore, metadata_value
from media_rules import SNIFF_BYTES, Media, Verdict, claimed_kind, judge

log = logging.getLogger(__name__)

# Media outcomes besides OpenFace's own (analysed, no_face, unreadable, failed).
TOO_LARGE = Outcome.TOO_LARGE.value
FAILED = Outcome.FAILED.value
SUPERSEDED = "superseded"  # the blob changed after the job was created; a newer job covers it
SKIPPED = "skipped"  # not this job's kind of media; no result blob
# Result files by output_names key, in upload order, with their content types.
CONTENT_TYPES = {
    "csv": "text/csv",
    "hog": "application/octet-stream",
    "aligned": "application/zip",
    "tracked_image": "image/jpeg",
    "tracked_video": "video/x-msvideo",
    "plot": "image/png",
}
# A job with at most this many blobs to look up asks for each summary alone rather than list them all.
FEW_LOOKUPS = 8
# Blobs up to this size are read whole to judge them, and analysed from that copy.
READ_WHOLE_BYTES = 8 * 1024 * 1024
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
    steps: dict = field(default_factory=dict)  # bytes moved and seconds taken, for the job's log line

    @property
    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for item in self.results:
            counts[item["status"]] = counts.get(item["status"], 0) + 1
        return {"media": sum(v for k, v in counts.items() if k != SKIPPED), "by_status": counts}


@dataclass
class Candidate:
    """A blob the job answers with a summary: by OpenFace's result, or by a problem found before."""

    blob: BlobInput
    stem: str
    extension: str | None = None  # the local copy's extension, when OpenFace is to read it
    problem: tuple[str, str] | None = None  # (status, reason) decided before OpenFace


class BlobFacts:
    """What a batch learns about blobs, each looked up once however many jobs list them:
    each blob version's verdict (from its first bytes) and each container's earlier results.

    With a ``spool`` folder, a blob up to ``read_whole_bytes`` is read whole
    for its verdict, and that copy is the one OpenFace reads (``take_copy``):
    one request instead of two for the small media most uploads are.
    """

    def __init__(self, store: MediaStore, spool: Path | None = None, read_whole_bytes: int = READ_WHOLE_BYTES,
                 disk: DiskBudget | None = None):
        self.store = store
        self.spool = spool
        self.read_whole_bytes = read_whole_bytes
        self.disk = disk  # a whole read takes room on it; without room, the head decides
        self._verdicts = Once()  # jobs are planned side by side
        self._summaries = Once()
        self._copies: dict[tuple[str, str, str], Path] = {}
        self._numbers = itertools.count()

    def verdict(self, container: str, blob: BlobInput) -> Verdict:
        return self._verdicts.get((container, blob.name, blob.etag), lambda: self._judge(container, blob))

    def take_copy(self, container: str, blob: BlobInput) -> Path | None:
        """The whole copy read for the verdict, if there is one; it is the caller's from now on."""
        return self._copies.pop((container, blob.name, blob.etag), None)

    def _judge(self, container: str, blob: BlobInput) -> Verdict:
        if (self.spool is None or not 0 < blob.size <= self.read_whole_bytes
                or (self.disk is not None and not self.disk.take(blob.size))):
            return judge(blob.name, blob.content_type, self.store.read_head(container, blob, SNIFF_BYTES))
        path = self.spool / f"whole-{next(self._numbers):05d}"
        try:
            self.store.download(container, blob, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            if self.disk is not None:
                self.disk.give(blob.size)
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
        self._copies[(container, blob.name, blob.etag)] = path
        return judge(blob.name, blob.content_type, head)

    def earlier_summary(self, container: str, name: str, few: bool = False) -> dict[str, str] | None:
        """The metadata of a summary blob already in the container, if there is one.

        One listing of ``processed/`` answers every blob of a container; with
        ``few`` lookups to make, each is one request for that blob alone, which
        costs less than listing the results of every upload before it.
        """
        if few:
            return self._summaries.get((container, name), lambda: self.store.metadata_of(container, name))
        summaries = self._summaries.get(container, lambda: self.store.metadata_under(container, PROCESSED_PREFIX))
        return summaries.get(name)


class ResultWriter:
    """Uploads a job's result blobs and keeps its report."""

    def __init__(self, job: Job, store: MediaStore, progress: JobProgress | None = None):
        self.job = job
        self.store = store
        self.progress = progress
        self.report = JobReport(JobStatus.SUCCEEDED)
        self.uploaded_bytes = 0
        self.upload_seconds = 0.0
        self._lock = threading.Lock()  # a batch may publish one job's media from several OpenFace threads
        # blob name -> the CSV this worker has of it (a file, or its bytes), for the job's table
        self.local_csv: dict[str, Path | bytes] = {}

    def metadata(self, blob: BlobInput) -> dict[str, str]:
        return {
            "job_id": self.job.job_id,
            "source_blob": metadata_value(blob.name),
            "source_etag": blob.etag,
            "media": self.job.media,
            "openface_options": " ".join(self.job.options),
            **self.job.option_set.metadata(),
        }

    def publish(self, blob: BlobInput, stem: str, status: str, reason: str | None,
                files: dict[str, Path] | None = None, stats: dict | None = None,
                plot_error: str | None = None, analysed_by: str | None = None,
                if_summary_is: str | None | bool = False) -> list[str]:
        """Upload a media blob's outputs (``files`` by output_names key), its summary last; returns their names.

        ``if_summary_is``: write the summary only if its blob still has this
        ETag (None: only if there is none), else BlobChanged; False: always.
        """
        started = time.monotonic()
        files = files or {}
        names = output_names(stem, self.job.option_set.tag)
        metadata = self.metadata(blob)
        written = []
        uploaded = 0
        with log_context(blob=blob.name):
            for key, content_type in CONTENT_TYPES.items():
                if key in files:
                    uploaded += self.store.upload_file(self.job.container, names[key], files[key], metadata,
                                                       content_type)
                    written.append(names[key])
            if "details" in files:  # after the files it names
                text = details_text(files["details"], self.job.container, blob.name, names, written)
                uploaded += self.store.upload_bytes(self.job.container, names["details"], text, metadata, "text/plain")
                written.append(names["details"])
            document = {
                "job_id": self.job.job_id,
                "source_blob": blob.name,
                "source_etag": blob.etag,
                "media": self.job.media,
                "media_type": self.job.media_type,
                "faces": self.job.faces,
                "extra_outputs": self.job.extra_outputs,
                "openface_options": self.job.options,
                "status": status,
                "reason": reason,
                "outputs": written,
                "summary": stats,
                "plot_error": plot_error,
                "analysed_by": analysed_by,
            }
            uploaded += self.store.upload_json(
                self.job.container, names["summary"], document, {**metadata, "status": status},
                if_etag=if_summary_is)
            written.append(names["summary"])
            log.info("media %s", status, extra={"reason": reason, "analysed_by": analysed_by})
        with self._lock:
            self.uploaded_bytes += uploaded
            self.upload_seconds += time.monotonic() - started
            if "csv" in files:
                self.local_csv[blob.name] = files["csv"]
        self._note(blob, status, reason, written, analysed_by)
        return written

    def record(self, blob: BlobInput, status: str, reason: str | None, outputs: list[str] | None = None,
               csv: Path | bytes | None = None, analysed_by: str | None = None) -> None:
        """Note a media's outcome without uploading anything (``csv``: a local copy of its CSV, if at hand)."""
        log.info("media %s", status, extra={"reason": reason, "blob": blob.name, "analysed_by": analysed_by})
        if csv is not None:
            with self._lock:
                self.local_csv[blob.name] = csv
        self._note(blob, status, reason, outputs or [], analysed_by)

    def _note(self, blob: BlobInput, status: str, reason: str | None, outputs: list[str],
              analysed_by: str | None = None) -> None:
        entry = {"blob": blob.name, "status": status, "reason": reason, "outputs": outputs}
        if analysed_by:
            entry["analysed_by"] = analysed_by  # "engine" or "cli": which of OpenFace's paths ran it
        with self._lock:
            self.report.outputs += outputs
            self.report.results.append(entry)
        if self.progress is not None and status != SKIPPED:
            self.progress.done(blob.name)

    def write_table(self, folder: Path) -> None:
        """``processed/_jobs/<job_id>.csv``: the rows of every image the job analysed, in one CSV.

        CSVs this worker has at hand are used as they are; those of media an
        earlier job analysed are fetched. Written before the job's manifest.
        """
        analysed = sorted((r for r in self.report.results if r["status"] == Outcome.ANALYSED.value),
                          key=lambda r: r["blob"])
        if not analysed:
            return
        parts = []
        for number, result in enumerate(analysed):
            path = self.local_csv.get(result["blob"])
            if isinstance(path, bytes):
                content, path = path, folder / f"{self.job.job_id}-{number}.csv"
                path.write_bytes(content)
            if path is None:
                csv_name = next(name for name in result["outputs"] if name.endswith(".csv"))
                path = folder / f"{self.job.job_id}-{number}.csv"
                try:
                    self.store.download_result(self.job.container, csv_name, path)
                except BlobChanged:
                    log.warning("no CSV for the job table: it was deleted", extra={"blob": result["blob"]})
                    continue
            parts.append((result["blob"], path))
        table = folder / f"{self.job.job_id}.csv"
        try:
            rows = write_table(parts, table)
        except ValueError as exc:
            log.warning("no job table: %s", exc)
            return
        name = job_table_name(self.job.job_id)
        self.uploaded_bytes += self.store.upload_file(
            self.job.container, name, table, {"job_id": self.job.job_id, "rows": str(rows)}, "text/csv")
        self.report.outputs.append(name)

    def skip(self, blob: BlobInput, reason: str) -> None:
        self.record(blob, SKIPPED, reason)

    def fail(self, reason: str) -> None:
        self.report.status = JobStatus.FAILED
        self.report.error = reason
        log.warning("job failed: %s", reason)

    def write_manifest(self) -> None:
        # Media may have been published from several threads: list them in a fixed order.
        self.report.results.sort(key=lambda result: result["blob"])
        self.report.outputs.sort()
        name = job_manifest_name(self.job.job_id)
        document = {
            "job_id": self.job.job_id,
            "container": self.job.container,
            "media": self.job.media,
            "media_type": self.job.media_type,
            "faces": self.job.faces,
            "extra_outputs": self.job.extra_outputs,
            "status": self.report.status.value,
            "error": self.report.error,
            "results": self.report.results,
            "outputs": self.report.outputs,
            "summary": self.report.summary,
        }
        self.uploaded_bytes += self.store.upload_json(
            self.job.container, name, document,
            {"job_id": self.job.job_id, "status": self.report.status.value},
        )
        self.report.outputs.append(name)


def choose_media(job: Job, facts: BlobFacts, results: ResultWriter, settings: Settings,
                 known: Callable[[BlobInput], bool] = lambda blob: False,
                 disk_capacity: int | None = None) -> list[Candidate]:
    """The job's blobs that get a summary from this job.

    The rest are noted in ``results``: other kinds and odd names (skipped),
    blobs changed since (superseded), and blob versions an earlier job
    already answered with the same options (reused). Raises JobFailed when
    the container holds nothing for this job. A blob version ``known`` to be in
    hand elsewhere in the worker (analysed, or being analysed) is a candidate
    without being read: its outcome comes from there. A blob larger than
    ``disk_capacity`` (what the worker's disk could ever hold) is too large.
    """
    media = Media(job.media)
    blobs = job.blob_inputs
    stems = output_stems([b.name for b in blobs])
    few = sum(1 for blob in blobs if not known(blob)) <= FEW_LOOKUPS
    chosen = []
    for blob in blobs:
        with log_context(blob=blob.name):
            candidate = _choose(job, media, blob, stems[blob.name], facts, results, settings, known, few,
                                disk_capacity)
        if candidate is not None:
            chosen.append(candidate)
    if not chosen and not any(r["status"] != SKIPPED for r in results.report.results):
        raise JobFailed(f"no {media.value} found in container '{job.container}' "
                        f"({len(blobs)} blob(s) outside processed/ checked)")
    return chosen


def _choose(job: Job, media: Media, blob: BlobInput, stem: str, facts: BlobFacts, results: ResultWriter,
            settings: Settings, known: Callable[[BlobInput], bool], few: bool,
            disk_capacity: int | None) -> Candidate | None:
    problem = blob_name_problem(blob.name)
    if problem:
        results.skip(blob, problem)
        return None
    # In hand in this worker: its word (and CSV) come from there, without a look at storage.
    if blob.size <= settings.max_blob_bytes and known(blob):
        return Candidate(blob, stem)
    if _reuse(job, blob, stem, facts, results, few):
        return None
    try:
        verdict = facts.verdict(job.container, blob)
    except BlobChanged:
        results.record(blob, SUPERSEDED, "the blob changed after the job was created")
        return None
    if verdict.kind is not media:
        found = f" (its content is {article(verdict.kind)}; {verdict.kind.value} jobs analyse it)" if verdict.kind else ""
        results.skip(blob, f"not {media.value} content{found}")
        return None
    if blob.size > settings.max_blob_bytes:
        return Candidate(blob, stem, problem=(
            TOO_LARGE, f"{blob.size} bytes is over the limit of {settings.max_blob_bytes} (MAX_BLOB_BYTES)"))
    if disk_capacity is not None and blob.size > disk_capacity:
        return Candidate(blob, stem, problem=(
            TOO_LARGE, f"{blob.size} bytes would not fit on the worker's disk even when empty ({disk_capacity} "
                       "bytes, its size less DISK_RESERVE_BYTES)"))
    if not verdict.readable:
        # Named like our media but is not: the uploader expects an answer.
        what = "the file is empty" if blob.size == 0 else f"the content is not {article(media)} format OpenFace reads"
        return Candidate(blob, stem, problem=(Outcome.UNREADABLE.value, what))
    return Candidate(blob, stem, verdict.extension)


def _reuse(job: Job, blob: BlobInput, stem: str, facts: BlobFacts, results: ResultWriter, few: bool) -> bool:
    """Take an earlier job's result for this exact blob version and options, if any.

    Each upload to a container starts a job over all of its blobs; this
    keeps those overlapping jobs from analysing a blob version twice.
    """
    if not _may_find_earlier(job):
        return False
    options = job.option_set
    names = output_names(stem, options.tag)
    earlier = facts.earlier_summary(job.container, names["summary"], few)
    if not earlier or earlier.get("status") not in REUSABLE:
        return False
    same = {"source_etag": blob.etag, "media": job.media, "openface_options": " ".join(job.options),
            "faces": job.faces}
    if any(earlier.get(key, "single" if key == "faces" else None) != value for key, value in same.items()):
        return False
    outputs = [names[key] for key in expected_outputs(Media(job.media), options, earlier["status"])]
    results.record(blob, earlier["status"], f"already analysed by job {earlier.get('job_id')}", outputs)
    return True


def _may_find_earlier(job: Job) -> bool:
    """Whether storage may hold an earlier result for this job: if not, it is not asked.

    A job made when its container held no results, as every upload to a
    container of its own is, can only meet results published after it was
    made. On its first attempt within RECENT_SECONDS of that, any such result
    came from this worker, which still remembers it (analysis/inflight.py);
    from another worker, a blob may rarely be analysed twice, to the same result.
    """
    if job.results_before is not False or job.attempts > 1:
        return True
    made = datetime.fromisoformat(job.created_at)
    return (datetime.now(timezone.utc) - made).total_seconds() > RECENT_SECONDS


def image_size_problem(path: Path, max_pixels: int) -> str | None:
    """Why a local image is too large for OpenFace, from its header alone (nothing is decoded); None if not.

    A few kilobytes of PNG can declare 30000×30000 pixels, which OpenCV
    would try to decode into 2.7 GB.
    """
    try:
        width, height = imagesize.get(path)
    except (OSError, ValueError):
        return None  # a header it cannot read: OpenFace's own verdict follows
    if width <= 0 or height <= 0 or width * height <= max_pixels:
        return None
    return f"{width}×{height} pixels ({width * height}) is over the limit of {max_pixels} (MAX_IMAGE_PIXELS)"


def expected_outputs(media: Media, options: Options, status: str) -> list[str]:
    """The output_names keys a media with this outcome gets (what an earlier job wrote, when reused)."""
    if status == Outcome.NO_FACE.value:
        keys = ["details"] if media is Media.IMAGE else ["csv", "details"]
    elif status == Outcome.ANALYSED.value:
        keys = ["csv", "details"] + (["plot"] if media is Media.VIDEO else [])
    else:
        return ["summary"]
    for extra in options.extra_outputs:
        if extra == "tracked":
            keys.append("tracked_image" if media is Media.IMAGE else "tracked_video")
        elif status == Outcome.ANALYSED.value or extra == "hog":  # no face: no aligned faces to zip
            keys.append(extra)
    return keys + ["summary"]


def write_failure(job: Job, store: MediaStore, reason: str) -> JobReport:
    """Result blobs for a job given up on (poisoned) without running it again; they destroy no answer.

    Media are chosen by what the uploader claimed (content type or extension),
    since nothing is downloaded here. A blob whose summary already answers
    this version with these options (analysed in an earlier attempt, or by
    another job) keeps it; a blob replaced since is left to the newer job,
    and its summary is never touched. Each failure summary is written only
    if the summary blob is still as looked at (ETag), so an answer published
    meanwhile wins.
    """
    media = Media(job.media)
    writer = ResultWriter(job, store)
    writer.fail(reason)
    blobs = [b for b in job.blob_inputs
             if not blob_name_problem(b.name) and claimed_kind(b.name, b.content_type) is media]
    stems = output_stems([b.name for b in blobs])
    try:
        for blob in blobs:
            with log_context(blob=blob.name):
                _fail_one(job, blob, stems[blob.name], store, writer, reason)
        writer.write_manifest()
    except ContainerNotFound:
        pass  # nowhere to write them
    return writer.report


def _fail_one(job: Job, blob: BlobInput, stem: str, store: MediaStore, writer: ResultWriter, reason: str) -> None:
    names = output_names(stem, job.option_set.tag)
    earlier, etag = store.state_of(job.container, names["summary"])
    if earlier and earlier.get("source_etag") == blob.etag and earlier.get("status") not in (None, FAILED):
        outputs = [names[key] for key in expected_outputs(Media(job.media), job.option_set, earlier["status"])]
        writer.record(blob, earlier["status"], f"kept: answered by job {earlier.get('job_id')} before this one "
                      "was given up on", outputs)
        return
    if store.current_etag(job.container, blob.name) != blob.etag:
        writer.record(blob, SUPERSEDED, "the blob changed after the job was created; a newer job covers it")
        return
    try:
        writer.publish(blob, stem, FAILED, reason, if_summary_is=etag)
    except BlobChanged:
        writer.record(blob, SUPERSEDED, "its summary was written meanwhile; that answer stands")
