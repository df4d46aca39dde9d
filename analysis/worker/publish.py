"""Publishing a job's results: each media's result blobs, and the job's report of them.

Every media blob the job takes on gets ``processed/<stem>.summary.json``
whatever happens to it, written after the files it names, so a reader that
sees a summary can rely on the CSV (if any) already being there. The job's
own table and manifest come last (analysis/worker/manifest.py).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from azure.core.exceptions import AzureError

from analysis.job import Job, JobStatus
from analysis.logs import log_context
from analysis.names import output_names
from analysis.openface.interpret import MediaOutcome
from analysis.openface.outputs import details_text
from analysis.openface.results import Outcome
from analysis.options import Options
from analysis.storage import BlobInput, ContainerNotFound, MediaStore, first_line, metadata_value
from analysis.worker.inflight import SharedOutcome
from analysis.worker.progress import JobProgress
from media_rules import Media

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


@dataclass
class JobReport:
    status: JobStatus
    results: list[dict] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    steps: dict = field(default_factory=dict)  # bytes moved and seconds taken, for the job's log line

    def fail(self, reason: str) -> None:
        self.status = JobStatus.FAILED
        self.error = reason
        log.warning("job failed: %s", reason)

    @property
    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for item in self.results:
            counts[item["status"]] = counts.get(item["status"], 0) + 1
        return {"media": sum(v for k, v in counts.items() if k != SKIPPED), "by_status": counts}


@dataclass
class RetryLater:
    """The job's attempt failed for a reason that may pass: try it again.

    ``spent`` False: nothing failed, the worker could not take the job on now
    (its disk is full): it goes back for later without spending an attempt.
    """

    reason: str
    spent: bool = True


class ResultWriter:
    """Uploads the result blobs of a job's media, notes each outcome in its report, and meters what it wrote."""

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
            "openface_options": " ".join(self.job.flags),
            **self.job.options.metadata(),
        }

    def publish(
        self,
        blob: BlobInput,
        stem: str,
        status: str,
        reason: str | None,
        files: dict[str, Path] | None = None,
        stats: dict | None = None,
        plot_error: str | None = None,
        analysed_by: str | None = None,
        if_summary_is: str | None | bool = False,
    ) -> list[str]:
        """Upload a media blob's outputs (``files`` by output_names key), its summary last; returns their names.

        ``if_summary_is``: write the summary only if its blob still has this
        ETag (None: only if there is none), else BlobChanged; False: always.
        """
        started = time.monotonic()
        files = files or {}
        names = output_names(stem, self.job.options.tag)
        metadata = self.metadata(blob)
        written = []
        uploaded = 0
        with log_context(blob=blob.name):
            for key, content_type in CONTENT_TYPES.items():
                if key in files:
                    uploaded += self.store.upload_file(
                        self.job.container, names[key], files[key], metadata, content_type
                    )
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
                "openface_options": self.job.flags,
                "status": status,
                "reason": reason,
                "outputs": written,
                "summary": stats,
                "plot_error": plot_error,
                "analysed_by": analysed_by,
            }
            uploaded += self.store.upload_json(
                self.job.container, names["summary"], document, {**metadata, "status": status}, if_etag=if_summary_is
            )
            written.append(names["summary"])
            log.info("media %s", status, extra={"reason": reason, "analysed_by": analysed_by})
        with self._lock:
            self.uploaded_bytes += uploaded
            self.upload_seconds += time.monotonic() - started
            if "csv" in files:
                self.local_csv[blob.name] = files["csv"]
        self._note(blob, status, reason, written, analysed_by)
        return written

    def record(
        self,
        blob: BlobInput,
        status: str,
        reason: str | None,
        outputs: list[str] | None = None,
        csv: Path | bytes | None = None,
        analysed_by: str | None = None,
    ) -> None:
        """Note a media's outcome without uploading anything (``csv``: a local copy of its CSV, if at hand)."""
        log.info("media %s", status, extra={"reason": reason, "blob": blob.name, "analysed_by": analysed_by})
        if csv is not None:
            with self._lock:
                self.local_csv[blob.name] = csv
        self._note(blob, status, reason, outputs or [], analysed_by)

    def _note(
        self, blob: BlobInput, status: str, reason: str | None, outputs: list[str], analysed_by: str | None = None
    ) -> None:
        entry = {"blob": blob.name, "status": status, "reason": reason, "outputs": outputs}
        if analysed_by:
            entry["analysed_by"] = analysed_by  # "engine" or "cli": which of OpenFace's paths ran it
        with self._lock:
            self.report.outputs += outputs
            self.report.results.append(entry)
        if self.progress is not None and status != SKIPPED:
            self.progress.done(blob.name)

    def skip(self, blob: BlobInput, reason: str) -> None:
        self.record(blob, SKIPPED, reason)

    def fail(self, reason: str) -> None:
        self.report.fail(reason)


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


def publish_shared(claimants: list, outcome: MediaOutcome, media: Media) -> SharedOutcome:
    """One media's outcome for every job that listed it (``(member, candidate)`` pairs, first job first):
    uploaded once per output name, the other jobs pointing at those blobs. Returns what other batches
    are told of it."""
    published: dict[str, tuple[str, list[str]]] = {}  # stem -> (job id, outputs)
    shared = None
    for member, candidate in sorted(claimants, key=lambda claimant: claimant[0].order):
        if candidate.stem in published:
            job_id, outputs = published[candidate.stem]
            with member.context(candidate.blob):
                member.results.record(
                    candidate.blob,
                    outcome.status,
                    f"analysed by job {job_id}, in the same OpenFace run",
                    outputs,
                    csv=outcome.files.get("csv"),
                    analysed_by=outcome.analysed_by,
                )
            continue
        outputs = publish_for(
            member,
            candidate,
            outcome.status,
            outcome.reason,
            files=outcome.files,
            stats=outcome.stats,
            plot_error=outcome.plot_error,
            analysed_by=outcome.analysed_by,
        )
        if outputs:
            published[candidate.stem] = (member.job.job_id, outputs)
            shared = shared or SharedOutcome(
                outcome.status, outcome.reason, outputs, member.job.job_id, csv=outcome.small_csv(media)
            )
    if shared is None:  # no claimant could write its results
        retries = [member.retry for member, _ in claimants if member.retry]
        waits = [member.later for member, _ in claimants if member.later]
        shared = (
            SharedOutcome(retry=retries[0])
            if retries
            else SharedOutcome(later=waits[0])
            if waits
            else SharedOutcome(gone=True)
        )
    return shared


def publish_for(member, candidate, status: str, reason: str | None, **files) -> list[str]:
    """Publish one media for one job of the batch; a storage failure is noted on the job, not raised."""
    with member.context():
        try:
            return member.results.publish(candidate.blob, candidate.stem, status, reason, **files)
        except ContainerNotFound:
            member.gone = True
        except AzureError as exc:
            member.retry_later(f"could not write the results of {candidate.blob.name}: {first_line(exc)}")
    return []
