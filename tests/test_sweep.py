"""The sweep: jobs whose message is gone are queued again; the others are left alone."""

import threading
import time
from datetime import UTC, datetime

import pytest

from analysis.job import Job, JobStatus, JobStore
from analysis.options import Options
from analysis.storage import BlobInput
from analysis.sweep import SILENT_PERIODS, Sweeper
from media_rules import Media, MediaType


def new_job(store, name):
    job, _ = store.create(Job.new(name, Media.IMAGE, Options(MediaType.POSED), [BlobInput("a.jpg", "0x1", 5, None)]))
    return job


@pytest.fixture
def store(blob_service, settings):
    store = JobStore(blob_service, settings.job_records_container)
    store.ensure()
    return store


def datetime_at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def queued_ids(queue):
    return sorted(delivery.job_id for delivery in queue.receive(32, visibility_seconds=30))


def test_a_stale_queued_job_and_a_silent_running_one_are_queued_again(store, queue):
    waiting = new_job(store, "c-wait")
    lost = new_job(store, "c-lost")
    dead = store.claim(new_job(store, "c-dead"), "token", attempts=1)
    alive = store.claim(new_job(store, "c-alive"), "token", attempts=1)
    done = store.move(new_job(store, "c-done"), JobStatus.FAILED)
    later = time.time() + 100  # the sweep's clock: 100 s on
    store.touch(waiting, None, queued_at=datetime_at(later - 5))  # queued 5 s before: its message may be coming
    store.touch(alive, "token", heartbeat_at=datetime_at(later - 5))
    sweeper = Sweeper(store, queue, requeue_seconds=30, visibility_seconds=10, clock=lambda: later)
    assert sweeper.sweep() == 2
    assert queued_ids(queue) == sorted([lost.job_id, dead.job_id])
    # A queued job notes when it was queued again: the next sweep of that period leaves it be.
    assert sweeper.sweep() == 1 and queued_ids(queue) == [dead.job_id]
    assert store.get(done.job_id).status is JobStatus.FAILED


def test_a_running_job_is_silent_only_after_several_periods(store, queue):
    job = store.claim(new_job(store, "c-beat"), "token", attempts=1)
    sweeper = Sweeper(store, queue, requeue_seconds=30, visibility_seconds=10)
    assert not sweeper.stale(JobStatus.RUNNING, job.alive_at)
    sweeper.clock = lambda: job.alive_at + SILENT_PERIODS * 10 + 1
    assert sweeper.stale(JobStatus.RUNNING, job.alive_at)


def test_the_sweep_waits_for_an_empty_queue(store, queue):
    new_job(store, "c-backlog")
    sweeper = Sweeper(store, queue, requeue_seconds=30, visibility_seconds=10, clock=lambda: time.time() + 100)
    empty = threading.Event()
    stop = threading.Event()
    thread = sweeper.run(stop, every=0.05, queue_empty=empty.is_set)
    time.sleep(0.5)
    assert queue.receive(32, visibility_seconds=30) == []  # a backlog: nothing queued twice
    empty.set()
    deadline = time.monotonic() + 10
    while not (found := queue.receive(32, visibility_seconds=30)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stop.set()
    thread.join()
    assert len(found) == 1
