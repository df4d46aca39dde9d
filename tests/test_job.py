import threading

import pytest

from analysis.job import InvalidTransition, Job, JobConflict, JobStatus, JobStore, job_id_for
from analysis.options import Options
from media_rules import Media, MediaType
from analysis.storage import BlobInput

INPUTS = [BlobInput("b.jpg", "0x2", 10, "image/jpeg"), BlobInput("a.jpg", "0x1", 10, None)]


def test_job_id_depends_on_versions_and_options_not_order():
    base = job_id_for("c1", Media.IMAGE, Options(MediaType.POSED), INPUTS)
    assert base == job_id_for("c1", Media.IMAGE, Options(MediaType.POSED), list(reversed(INPUTS)))
    changed = [INPUTS[0], BlobInput("a.jpg", "0x9", 10, None)]
    assert len({
        base,
        job_id_for("c1", Media.IMAGE, Options(MediaType.POSED), changed),
        job_id_for("c1", Media.IMAGE, Options(MediaType.WILD), INPUTS),
        job_id_for("c1", Media.VIDEO, Options(MediaType.POSED), INPUTS),
        job_id_for("c2", Media.IMAGE, Options(MediaType.POSED), INPUTS),
    }) == 5


def test_wild_adds_the_wild_flag():
    assert "-wild" in Job.new("c1", Media.IMAGE, Options(MediaType.WILD), INPUTS).options
    assert "-wild" not in Job.new("c1", Media.IMAGE, Options(MediaType.POSED), INPUTS).options


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


@pytest.mark.parametrize("path", [
    [JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RUNNING, JobStatus.FAILED, JobStatus.QUEUED,
     JobStatus.RUNNING, JobStatus.SUCCEEDED],
    [JobStatus.FAILED],
])
def test_allowed_moves(store, path):
    job, _ = store.create(Job.new("c4", Media.IMAGE, Options(MediaType.POSED), INPUTS))
    for status in path:
        job = store.move(job, status)
    assert store.get(job.job_id).status is path[-1]


@pytest.mark.parametrize("start,to", [(JobStatus.QUEUED, JobStatus.SUCCEEDED), (JobStatus.FAILED, JobStatus.RUNNING),
                                      (JobStatus.SUCCEEDED, JobStatus.RUNNING)])
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
