import threading
from datetime import UTC, datetime

import pytest

from analysis.job import InvalidTransition, Job, JobConflict, JobStatus, JobStore, LeaseLost, job_id_for
from analysis.options import Options
from analysis.storage import BlobInput
from media_rules import Media, MediaType

INPUTS = [BlobInput("b.jpg", "0x2", 10, "image/jpeg"), BlobInput("a.jpg", "0x1", 10, None)]


def test_job_id_depends_on_versions_and_options_not_order():
    base = job_id_for("c1", Media.IMAGE, Options(MediaType.POSED), INPUTS)
    assert base == job_id_for("c1", Media.IMAGE, Options(MediaType.POSED), list(reversed(INPUTS)))
    changed = [INPUTS[0], BlobInput("a.jpg", "0x9", 10, None)]
    assert (
        len(
            {
                base,
                job_id_for("c1", Media.IMAGE, Options(MediaType.POSED), changed),
                job_id_for("c1", Media.IMAGE, Options(MediaType.WILD), INPUTS),
                job_id_for("c1", Media.VIDEO, Options(MediaType.POSED), INPUTS),
                job_id_for("c2", Media.IMAGE, Options(MediaType.POSED), INPUTS),
            }
        )
        == 5
    )


def test_wild_adds_the_wild_flag():
    assert "-wild" in Job.new("c1", Media.IMAGE, Options(MediaType.WILD), INPUTS).flags
    assert "-wild" not in Job.new("c1", Media.IMAGE, Options(MediaType.POSED), INPUTS).flags


@pytest.fixture
def store(blob_service, settings):
    store = JobStore(blob_service, settings.job_records_container)
    store.ensure()
    return store


def test_create_is_idempotent_even_when_racing(store):
    jobs = [Job.new("c1", Media.IMAGE, Options(MediaType.POSED), INPUTS) for _ in range(8)]
    results = []
    threads = [threading.Thread(target=lambda j=j: results.append(store.create(j))) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in results) == 1
    assert {job.job_id for job, _ in results} == {jobs[0].job_id}


def test_round_trip_and_conflict(store):
    job, _ = store.create(Job.new("c2", Media.VIDEO, Options(MediaType.WILD), INPUTS))
    stale = store.get(job.job_id)
    store.move(job, JobStatus.RUNNING, attempts=1)
    with pytest.raises(JobConflict):
        stale.status = JobStatus.FAILED
        store.save(stale)
    again = store.get(job.job_id)
    assert again.status is JobStatus.RUNNING and again.attempts == 1
    assert again.blob_inputs == INPUTS
    # move() re-reads on conflict, and checks the move against the state it finds
    stale = store.get(job.job_id)
    store.move(job, JobStatus.SUCCEEDED)
    with pytest.raises(InvalidTransition, match="from succeeded to queued"):
        store.move(stale, JobStatus.QUEUED, error="late writer")
    assert store.get(job.job_id).error is None


@pytest.mark.parametrize(
    "path",
    [
        [
            JobStatus.RUNNING,
            JobStatus.QUEUED,
            JobStatus.RUNNING,
            JobStatus.RUNNING,
            JobStatus.FAILED,
            JobStatus.QUEUED,
            JobStatus.RUNNING,
            JobStatus.SUCCEEDED,
        ],
        [JobStatus.FAILED],
    ],
)
def test_allowed_moves(store, path):
    job, _ = store.create(Job.new("c4", Media.IMAGE, Options(MediaType.POSED), INPUTS))
    for status in path:
        job = store.move(job, status)
    assert store.get(job.job_id).status is path[-1]


@pytest.mark.parametrize(
    "start,to",
    [
        (JobStatus.QUEUED, JobStatus.SUCCEEDED),
        (JobStatus.FAILED, JobStatus.RUNNING),
        (JobStatus.SUCCEEDED, JobStatus.RUNNING),
    ],
)
def test_refused_moves(store, start, to):
    job, _ = store.create(Job.new("c5", Media.IMAGE, Options(MediaType.POSED), INPUTS))
    job.status = start
    with pytest.raises(InvalidTransition):
        store.move(job, to)


def test_public_view(store):
    job, _ = store.create(Job.new("c3", Media.IMAGE, Options(MediaType.WILD), INPUTS))
    view = store.get(job.job_id).public()
    for key in ("job_id", "status", "attempts", "outputs", "error", "summary", "results"):
        assert key in view
    assert view["media_type"] == "wild" and view["status"] == "queued"


def test_a_claim_takes_the_record_only_as_read(store):
    job, _ = store.create(Job.new("c6", Media.IMAGE, Options(MediaType.POSED), INPUTS))
    first = store.claim(job, "token-a", attempts=1)
    assert (first.status, first.holder, first.attempts) == (JobStatus.RUNNING, "token-a", 1)
    assert job.status is JobStatus.QUEUED  # the caller's copy is left as it was read
    with pytest.raises(JobConflict):  # a second claim from the same old read never takes it over blindly
        store.claim(job, "token-b", attempts=1)
    assert store.get(job.job_id).holder == "token-a"


def test_only_the_holder_settles_or_touches_a_job(store):
    job, _ = store.create(Job.new("c7", Media.IMAGE, Options(MediaType.POSED), INPUTS))
    mine = store.claim(job, "token-a", attempts=1)
    theirs = store.claim(store.get(job.job_id), "token-b", attempts=2)  # a lease lapsed; another took it
    with pytest.raises(LeaseLost):
        store.move(mine, JobStatus.SUCCEEDED, by="token-a", summary={"media": 1})
    with pytest.raises(LeaseLost):
        store.touch(mine, "token-a", heartbeat_at="2000-01-01T00:00:00+00:00")
    store.move(theirs, JobStatus.SUCCEEDED, by="token-b")
    record = store.get(job.job_id)
    assert (record.status, record.holder, record.attempts, record.summary) == (JobStatus.SUCCEEDED, "token-b", 2, None)


def test_the_record_listing_shows_status_and_last_sign_of_life(store):
    queued, _ = store.create(Job.new("c8", Media.IMAGE, Options(MediaType.POSED), INPUTS))
    running, _ = store.create(Job.new("c9", Media.IMAGE, Options(MediaType.POSED), INPUTS))
    running = store.claim(running, "token", attempts=1)
    running = store.touch(running, "token", heartbeat_at="2001-02-03T04:05:06+00:00")
    seen = {record.job_id: record for record in store.records()}
    assert seen[queued.job_id].status is JobStatus.QUEUED
    assert seen[queued.job_id].alive_at == pytest.approx(queued.alive_at, abs=1)
    assert seen[running.job_id].status is JobStatus.RUNNING
    assert seen[running.job_id].alive_at == datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC).timestamp()
    assert not any(job_id.startswith("by-container") for job_id in seen)  # the markers are not records
    assert "holder" not in running.public() and "heartbeat_at" not in running.public()
