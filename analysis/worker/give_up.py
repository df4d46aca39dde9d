"""Giving up on a job (``MAX_ATTEMPTS`` spent) without destroying any answer already published."""

from __future__ import annotations

from analysis.job import Job
from analysis.logs import log_context
from analysis.names import blob_name_problem, output_names, output_stems
from analysis.storage import BlobChanged, BlobInput, ContainerNotFound, MediaStore
from analysis.worker.manifest import write_manifest
from analysis.worker.publish import FAILED, SUPERSEDED, JobReport, ResultWriter, expected_outputs
from media_rules import Media, claimed_kind


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
    blobs = [
        b for b in job.blob_inputs if not blob_name_problem(b.name) and claimed_kind(b.name, b.content_type) is media
    ]
    stems = output_stems([b.name for b in blobs])
    try:
        for blob in blobs:
            with log_context(blob=blob.name):
                _fail_one(job, blob, stems[blob.name], store, writer, reason)
        write_manifest(writer)
    except ContainerNotFound:
        pass  # nowhere to write them
    return writer.report


def _fail_one(job: Job, blob: BlobInput, stem: str, store: MediaStore, writer: ResultWriter, reason: str) -> None:
    names = output_names(stem, job.options.tag)
    earlier, etag = store.state_of(job.container, names["summary"])
    if earlier and earlier.get("source_etag") == blob.etag and earlier.get("status") not in (None, FAILED):
        outputs = [names[key] for key in expected_outputs(Media(job.media), job.options, earlier["status"])]
        writer.record(
            blob,
            earlier["status"],
            f"kept: answered by job {earlier.get('job_id')} before this one was given up on",
            outputs,
        )
        return
    if store.current_etag(job.container, blob.name) != blob.etag:
        writer.record(blob, SUPERSEDED, "the blob changed after the job was created; a newer job covers it")
        return
    try:
        writer.publish(blob, stem, FAILED, reason, if_summary_is=etag)
    except BlobChanged:
        writer.record(blob, SUPERSEDED, "its summary was written meanwhile; that answer stands")
