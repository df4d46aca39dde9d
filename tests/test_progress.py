import threading

import pytest

from analysis.job import Job, JobStatus, JobStore
from analysis.options import Options
from analysis.storage import BlobInput
from analysis.worker.progress import JobProgress, ProgressWriter
from media_rules import Media

INPUTS = [BlobInput("a.mp4", "0x1", 10, "video/mp4"), BlobInput("b.mp4", "0x2", 10, "video/mp4")]


@pytest.fixture
def store(blob_service, settings):
    store = JobStore(blob_service, settings.job_records_container)
    store.ensure()
    return store


def test_percent_never_goes_back_and_done_means_100():
    progress = JobProgress()
    progress.expect_more(2)
    progress.percent("a.mp4", 40)
    progress.percent("a.mp4", 30)  # a console read that lagged
    progress.percent("b.mp4", 10)
    progress.done("a.mp4")
    progress.percent("a.mp4", 20)
    assert progress.snapshot() == {"media_total": 2, "media_done": 1, "percent": {"a.mp4": 100, "b.mp4": 10}}


def test_the_writer_writes_changes_only_and_lets_a_job_go_before_it_settles(store):
    job, _ = store.create(Job.new("c-progress", Media.VIDEO, Options(), INPUTS))
    job = store.move(job, JobStatus.RUNNING)
    progress = JobProgress()
    progress.expect_more(2)
    writes = []
    real_save = store.save

    def counting_save(saved):
        writes.append(dict(saved.progress))
        return real_save(saved)

    store.save = counting_save
    with ProgressWriter(store, interval=0.05) as writer:
        writer.track(job, progress)
        progress.percent("a.mp4", 50)
        deadline = threading.Event()
        while not writes and not deadline.wait(0.05):
            pass
        quiet = len(writes)
        deadline.wait(0.3)  # nothing changed: nothing written
        assert len(writes) == quiet
        writer.retire(job.job_id)
        progress.percent("a.mp4", 70)
        deadline.wait(0.3)  # let go: its changes are no longer written
        assert len(writes) == quiet
    store.save = real_save
    assert store.get(job.job_id).progress == {"media_total": 2, "media_done": 0, "percent": {"a.mp4": 50}}
    # The writer let it go; the job's own record of its etag is current, so settling just works.
    done = store.move(job, JobStatus.SUCCEEDED)
    assert done.progress is None and store.get(job.job_id).progress is None
