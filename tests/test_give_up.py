"""Giving up on a job (analysis/worker/give_up.py): failure summaries only where no answer is."""

import json

from analysis.job import Job
from analysis.options import Options
from analysis.storage import BlobInput, MediaStore, blob_service_client
from analysis.worker.give_up import write_failure
from media_rules import Media


def test_giving_up_never_touches_the_summary_of_a_newer_version(container, settings):
    """The job was made for face.jpg as it was; it was replaced since, and a newer job answered the new one."""
    store = MediaStore(blob_service_client(settings))
    old = etag_of(container.upload_blob("face.jpg", b"\xff\xd8\xff old", overwrite=True))
    job = Job.new(container.container_name, Media.IMAGE, Options(), [BlobInput("face.jpg", old, 10, "image/jpeg")])
    new = etag_of(container.upload_blob("face.jpg", b"\xff\xd8\xff new", overwrite=True))
    newer = b'{"status": "analysed"}'
    container.upload_blob(
        "processed/face.summary.json",
        newer,
        metadata={"status": "analysed", "source_etag": new, "job_id": "a-newer-job"},
    )
    report = write_failure(job, store, "gave up after 3 attempts: the worker stopped during every attempt")
    assert container.download_blob("processed/face.summary.json").readall() == newer
    (result,) = report.results
    assert result["status"] == "superseded" and report.status.value == "failed"


def test_giving_up_answers_a_blob_without_a_summary(container, settings):
    store = MediaStore(blob_service_client(settings))
    written = etag_of(container.upload_blob("face.jpg", b"\xff\xd8\xff", overwrite=True))
    job = Job.new(container.container_name, Media.IMAGE, Options(), [BlobInput("face.jpg", written, 3, "image/jpeg")])
    write_failure(job, store, "gave up after 3 attempts: OpenFace crashed")
    summary = json.loads(container.download_blob("processed/face.summary.json").readall())
    assert summary["status"] == "failed" and "OpenFace crashed" in summary["reason"]


def etag_of(blob) -> str:
    return blob.get_blob_properties().etag.strip('"')
