"""Planning a job: which of its blobs OpenFace must see, and which are answered without it.

A job's blobs are judged once per batch (``BlobFacts``): by their first
bytes, or, when small, read whole and that copy analysed. Odd names and
other kinds are skipped, blobs changed since are superseded, and versions
an earlier job answered with the same options are reused; what is left are
the candidates, each with the problem found before OpenFace if any.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import imagesize

from analysis.config import Settings
from analysis.job import Job
from analysis.logs import log_context
from analysis.names import PROCESSED_PREFIX, blob_name_problem, output_names, output_stems
from analysis.openface.results import Outcome
from analysis.parallel import Once
from analysis.storage import BlobChanged, BlobInput, MediaStore
from analysis.worker.disk import DiskBudget
from analysis.worker.inflight import RECENT_SECONDS
from analysis.worker.publish import SKIPPED, SUPERSEDED, TOO_LARGE, ResultWriter, expected_outputs
from media_rules import SNIFF_BYTES, Media, Verdict, judge

log = logging.getLogger(__name__)

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

    def __init__(
        self,
        store: MediaStore,
        spool: Path | None = None,
        read_whole_bytes: int = READ_WHOLE_BYTES,
        disk: DiskBudget | None = None,
    ):
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
        if (
            self.spool is None
            or not 0 < blob.size <= self.read_whole_bytes
            or (self.disk is not None and not self.disk.take(blob.size))
        ):
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


def choose_media(
    job: Job,
    facts: BlobFacts,
    results: ResultWriter,
    settings: Settings,
    known: Callable[[BlobInput], bool] = lambda blob: False,
    disk_capacity: int | None = None,
) -> list[Candidate]:
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
            candidate = _choose(job, media, blob, stems[blob.name], facts, results, settings, known, few, disk_capacity)
        if candidate is not None:
            chosen.append(candidate)
    if not chosen and not any(r["status"] != SKIPPED for r in results.report.results):
        raise JobFailed(
            f"no {media.value} found in container '{job.container}' ({len(blobs)} blob(s) outside processed/ checked)"
        )
    return chosen


def _choose(
    job: Job,
    media: Media,
    blob: BlobInput,
    stem: str,
    facts: BlobFacts,
    results: ResultWriter,
    settings: Settings,
    known: Callable[[BlobInput], bool],
    few: bool,
    disk_capacity: int | None,
) -> Candidate | None:
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
        found = (
            f" (its content is {article(verdict.kind)}; {verdict.kind.value} jobs analyse it)" if verdict.kind else ""
        )
        results.skip(blob, f"not {media.value} content{found}")
        return None
    if blob.size > settings.max_blob_bytes:
        return Candidate(
            blob,
            stem,
            problem=(TOO_LARGE, f"{blob.size} bytes is over the limit of {settings.max_blob_bytes} (MAX_BLOB_BYTES)"),
        )
    if disk_capacity is not None and blob.size > disk_capacity:
        return Candidate(
            blob,
            stem,
            problem=(
                TOO_LARGE,
                f"{blob.size} bytes would not fit on the worker's disk even when empty ({disk_capacity} "
                "bytes, its size less DISK_RESERVE_BYTES)",
            ),
        )
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
    options = job.options
    names = output_names(stem, options.tag)
    earlier = facts.earlier_summary(job.container, names["summary"], few)
    if not earlier or earlier.get("status") not in REUSABLE:
        return False
    same = {"source_etag": blob.etag, "media": job.media, "openface_options": " ".join(job.flags), "faces": job.faces}
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
    came from this worker, which still remembers it (analysis/worker/inflight.py);
    from another worker, a blob may rarely be analysed twice, to the same result.
    """
    if job.results_before is not False or job.attempts > 1:
        return True
    made = datetime.fromisoformat(job.created_at)
    return (datetime.now(UTC) - made).total_seconds() > RECENT_SECONDS


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
