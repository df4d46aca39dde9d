"""The quarantine line: jobs whose worker died wait here, hidden, and run one by one."""

import time

from analysis.names import job_manifest_name
from analysis.worker.lease import Lease
from analysis.worker.quarantine import Quarantine
from openface_standin.media import make_face_image


def test_waiting_messages_stay_hidden_and_come_out_in_order(queue):
    for job_id in ("a" * 32, "b" * 32):
        queue.enqueue(job_id)
    first, second = queue.receive(2, visibility_seconds=2)
    with Quarantine(queue, visibility_seconds=2) as line, Lease(queue, [first, second], 2) as batch:
        line.admit(first, batch)
        line.admit(second, batch)
        assert batch.held() == [] and len(line) == 2
        time.sleep(3.5)  # past their visibility: only the line's lease keeps them hidden
        assert queue.receive(32, visibility_seconds=2) == []
        assert line.next().job_id == "a" * 32 and len(line) == 1
        queue.complete(first)
    # On leaving, the jobs still waiting are released for the next worker at once.
    (again,) = queue.receive(32, visibility_seconds=30)
    assert again.job_id == "b" * 32 and again.dequeue_count == 2


def test_a_worker_killed_twice_costs_at_most_the_job_running_alone(service_factory, blob_service, tmp_path):
    """20 jobs, MAX_ATTEMPTS=2, the worker SIGKILLed mid-batch and again while the first of them runs alone:
    only that one may fail; the others wait their turn in the line without spending an attempt."""
    service = service_factory(MAX_ATTEMPTS="2", TMPDIR=str(tmp_path))
    containers = []
    for number in range(20):
        made = blob_service.create_container(f"line-{number}-{time.time_ns()}")
        made.upload_blob("face.jpg", make_face_image(tmp_path / f"{number}.jpg", seconds=1).read_bytes())
        containers.append(made)
    try:
        job_ids = [service.analyse("image", "ip", made.container_name).json()["job_id"] for made in containers]
        wait_until(lambda: all(service.job(j)["status"] == "running" for j in job_ids), service)
        service.kill_worker()
        service.start_worker()
        alone = wait_until(
            lambda: [j for j in job_ids if (job := service.job(j))["status"] == "running" and job["attempts"] == 2],
            service,
            timeout=60,
        )
        service.kill_worker()
        service.start_worker()
        jobs = {job_id: service.wait_for_job(job_id, timeout=120) for job_id in job_ids}
        failed = [job_id for job_id, job in jobs.items() if job["status"] == "failed"]
        assert set(failed) <= set(alone) and len(alone) == 1
        for job_id in failed:
            assert "the worker stopped during every attempt" in jobs[job_id]["error"]
        for job_id, job in jobs.items():
            assert job_id in failed or (job["status"] == "succeeded" and job["attempts"] == 2)
        for made, job_id in zip(containers, job_ids):
            manifests = [
                b.name for b in made.list_blobs(name_starts_with="processed/_jobs/") if b.name.endswith(".json")
            ]
            assert manifests == [job_manifest_name(job_id)]  # every job answered, once
    finally:
        for made in containers:
            made.delete_container()


def wait_until(check, service, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, service.log("worker")
        time.sleep(0.1)
    return found
