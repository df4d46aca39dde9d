"""Planning a job's media (analysis/analyse.py): when earlier results are looked for."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from analysis.analyse import _may_find_earlier
from analysis.inflight import RECENT_SECONDS
from analysis.job import Job
from analysis.options import Options
from analysis.storage import BlobInput
from media_rules import Media

INPUTS = [BlobInput("face.jpg", "0x1", 10, "image/jpeg")]


def job(results_before, attempts=1, age_seconds=0.0):
    made = Job.new("c1", Media.IMAGE, Options(), INPUTS, results_before)
    made.attempts = attempts
    made.created_at = (datetime.now(timezone.utc) - timedelta(seconds=age_seconds)).isoformat(timespec="seconds")
    return made


def test_a_young_first_attempt_in_a_container_without_results_does_not_look():
    assert not _may_find_earlier(job(results_before=False))


@pytest.mark.parametrize("case", [
    job(results_before=True),  # results were there when it was made
    job(results_before=None),  # a record from before this was kept
    job(results_before=False, attempts=2),  # an earlier attempt may have published some
    job(results_before=False, age_seconds=RECENT_SECONDS + 60),  # the worker no longer remembers what it published
], ids=["results before", "old record", "retry", "old job"])
def test_every_other_job_looks(case):
    assert _may_find_earlier(case)


def test_a_few_lookups_ask_for_each_summary_and_many_list_them_once(container, settings, tmp_path):
    from analysis.analyse import BlobFacts
    from analysis.storage import MediaStore, blob_service_client

    store = MediaStore(blob_service_client(settings))
    container.upload_blob("processed/a.summary.json", b"{}", metadata={"status": "analysed"})
    calls = []
    store.metadata_of = lambda c, name: calls.append(("one", name)) or MediaStore.metadata_of(store, c, name)
    store.metadata_under = lambda c, prefix: calls.append(("list", prefix)) or MediaStore.metadata_under(
        store, c, prefix)
    facts = BlobFacts(store)
    name = container.container_name
    assert facts.earlier_summary(name, "processed/a.summary.json", few=True) == {"status": "analysed"}
    assert facts.earlier_summary(name, "processed/b.summary.json", few=True) is None
    assert facts.earlier_summary(name, "processed/a.summary.json", few=True) == {"status": "analysed"}  # kept
    assert calls == [("one", "processed/a.summary.json"), ("one", "processed/b.summary.json")]
    assert facts.earlier_summary(name, "processed/a.summary.json") == {"status": "analysed"}
    assert facts.earlier_summary(name, "processed/b.summary.json") is None
    assert calls[2:] == [("list", "processed/")]


def test_giving_up_never_touches_the_summary_of_a_newer_version(container, settings):
    """The job was made for face.jpg as it was; it was replaced since, and a newer job answered the new one."""
    from analysis.analyse import write_failure
    from analysis.storage import MediaStore, blob_service_client

    store = MediaStore(blob_service_client(settings))
    old = etag_of(container.upload_blob("face.jpg", b"\xff\xd8\xff old", overwrite=True))
    job = Job.new(container.container_name, Media.IMAGE, Options(), [BlobInput("face.jpg", old, 10, "image/jpeg")])
    new = etag_of(container.upload_blob("face.jpg", b"\xff\xd8\xff new", overwrite=True))
    newer = b'{"status": "analysed"}'
    container.upload_blob("processed/face.summary.json", newer, metadata={
        "status": "analysed", "source_etag": new, "job_id": "a-newer-job"})
    report = write_failure(job, store, "gave up after 3 attempts: the worker stopped during every attempt")
    assert container.download_blob("processed/face.summary.json").readall() == newer
    (result,) = report.results
    assert result["status"] == "superseded" and report.status.value == "failed"


def test_giving_up_answers_a_blob_without_a_summary(container, settings):
    from analysis.analyse import write_failure
    from analysis.storage import MediaStore, blob_service_client

    store = MediaStore(blob_service_client(settings))
    written = etag_of(container.upload_blob("face.jpg", b"\xff\xd8\xff", overwrite=True))
    job = Job.new(container.container_name, Media.IMAGE, Options(), [BlobInput("face.jpg", written, 3, "image/jpeg")])
    write_failure(job, store, "gave up after 3 attempts: OpenFace crashed")
    summary = json.loads(container.download_blob("processed/face.summary.json").readall())
    assert summary["status"] == "failed" and "OpenFace crashed" in summary["reason"]


def etag_of(blob) -> str:
    return blob.get_blob_properties().etag.strip('"')
