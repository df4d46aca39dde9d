"""Jobs that wait together run together: shared OpenFace runs, and every job still its own.

The worker runs in this process (``run(burst=True)``) over jobs made through
the real route; OpenFace is the stand-in, whose invocation log counts runs.
"""

import json
import random
import signal
import threading
import time

import pytest

from analysis.backends import Backends
from analysis.names import job_manifest_name
from analysis.openface.runner import OpenFaceRunner
from analysis.worker.loop import Worker
from openface_standin.media import make_corrupt_video, make_face_image, make_png_header, make_video


@pytest.fixture
def runs(tmp_path, monkeypatch):
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("OPENFACE_STANDIN_LOG", str(log))
    return lambda: [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def new_container(blob_service):
    made = []

    def make(*uploads):
        client = blob_service.create_container(f"batch-{len(made)}-{time.time_ns()}")
        made.append(client)
        for name, path in uploads:
            client.upload_blob(name, path.read_bytes(), overwrite=True)
        return client

    yield make
    for client in made:
        client.delete_container()


def work(settings, **overrides):
    """One worker, in this process, until the queue is empty."""
    settings = settings.model_copy(update=overrides)
    Worker(settings, Backends(settings), OpenFaceRunner.from_settings(settings)).run(burst=True)


def summary(container, stem):
    return json.loads(container.download_blob(f"processed/{stem}.summary.json").readall())


def test_waiting_jobs_of_many_containers_share_one_run(client, settings, new_container, tmp_path, runs):
    containers = [new_container((f"face{i}.jpg", make_face_image(tmp_path / f"{i}.jpg"))) for i in range(5)]
    job_ids = [client.post(f"/analyse/image/ip/{c.container_name}").json["job_id"] for c in containers]
    work(settings, openface_processes=1)
    assert [run["args"].count("-f") for run in runs()] == [5]  # one model load for five jobs
    for number, (job_id, container) in enumerate(zip(job_ids, containers)):
        job = client.get(f"/jobs/{job_id}").json
        assert job["status"] == "succeeded" and job["summary"]["by_status"] == {"analysed": 1}
        assert summary(container, f"face{number}")["job_id"] == job_id
        assert container.get_blob_client(job_manifest_name(job_id)).exists()


def test_trickling_uploads_are_each_analysed_once(client, settings, new_container, tmp_path, runs):
    container = new_container()
    job_ids = []
    for i in range(6):  # a POST after each upload, as the trigger does
        container.upload_blob(f"f{i}.jpg", make_face_image(tmp_path / f"{i}.jpg").read_bytes())
        job_ids.append(client.post(f"/analyse/image/ip/{container.container_name}").json["job_id"])
    work(settings, openface_processes=1)
    assert [run["args"].count("-f") for run in runs()] == [6]
    last = client.get(f"/jobs/{job_ids[-1]}").json
    assert last["status"] == "succeeded" and {r["status"] for r in last["results"]} == {"analysed"}
    assert len(last["results"]) == 6
    for job_id in job_ids:
        assert client.get(f"/jobs/{job_id}").json["status"] == "succeeded"
        assert container.get_blob_client(job_manifest_name(job_id)).exists()
    # Each blob's result was written once, by the first job that listed it.
    assert summary(container, "f0")["job_id"] == job_ids[0] and summary(container, "f5")["job_id"] == job_ids[5]
    shared = [r for r in last["results"] if "same OpenFace run" in (r["reason"] or "")]
    assert len(shared) == 5, last["results"]
    assert all("processed/" in r["outputs"][0] for r in shared)


def test_while_a_batch_runs_a_lone_image_waits_for_company(client, settings, new_container, tmp_path, runs):
    """A free slot is not spent on one image's model load while another batch still runs."""
    video = new_container(("long.mp4", make_video(tmp_path / "long.mp4", frames=20, seconds=2)))
    images = [new_container((f"f{i}.jpg", make_face_image(tmp_path / f"{i}.jpg"))) for i in range(3)]
    job_ids = [client.post(f"/analyse/video/ip/{video.container_name}").json["job_id"]]
    settings = settings.model_copy(update={"openface_processes": 2})
    worker = threading.Thread(
        target=Worker(settings, Backends(settings), OpenFaceRunner.from_settings(settings)).run, kwargs={"burst": True}
    )
    worker.start()
    while not runs():  # the video holds one slot
        time.sleep(0.05)
    job_ids.append(client.post(f"/analyse/image/ip/{images[0].container_name}").json["job_id"])
    # Claimed: its batch is gathering. Alone, it would start now; it waits for company instead.
    while client.get(f"/jobs/{job_ids[-1]}").json["status"] != "running":
        time.sleep(0.05)
    job_ids += [client.post(f"/analyse/image/ip/{c.container_name}").json["job_id"] for c in images[1:]]
    worker.join(60)
    assert [run["args"].count("-f") for run in runs() if run["exe"] == "FaceLandmarkImg"] == [3]
    assert all(client.get(f"/jobs/{job_id}").json["status"] == "succeeded" for job_id in job_ids)


def test_different_options_are_never_merged(client, settings, new_container, tmp_path, runs):
    face = make_face_image(tmp_path / "f.jpg")
    posed, wild = new_container(("a.jpg", face)), new_container(("b.jpg", face))
    videos = new_container(("v.mp4", make_video(tmp_path / "v.mp4", frames=3)))
    client.post(f"/analyse/image/ip/{posed.container_name}")
    client.post(f"/analyse/image/iw/{wild.container_name}")
    client.post(f"/analyse/video/ip/{videos.container_name}")
    work(settings)
    argvs = sorted((run["exe"], "-wild" in run["args"], run["args"].count("-f")) for run in runs())
    assert argvs == [("FaceLandmarkImg", False, 1), ("FaceLandmarkImg", True, 1), ("FeatureExtraction", False, 1)]


def test_one_jobs_corrupt_file_leaves_another_jobs_outcome_alone(client, settings, new_container, tmp_path):
    broken = new_container(
        ("bad.mp4", make_corrupt_video(tmp_path / "bad.mp4")), ("good.mp4", make_video(tmp_path / "g.mp4", frames=2))
    )
    fine = new_container(("clip.mp4", make_video(tmp_path / "c.mp4", frames=4)))
    first = client.post(f"/analyse/video/ip/{broken.container_name}").json["job_id"]
    second = client.post(f"/analyse/video/ip/{fine.container_name}").json["job_id"]
    work(settings, openface_processes=1)
    assert {r["blob"]: r["status"] for r in client.get(f"/jobs/{first}").json["results"]} == {
        "bad.mp4": "unreadable",
        "good.mp4": "analysed",
    }
    other = client.get(f"/jobs/{second}").json
    assert other["status"] == "succeeded" and other["summary"]["by_status"] == {"analysed": 1}


def test_a_crash_of_a_shared_run_is_retried_per_job_and_alone(
    client, settings, new_container, tmp_path, runs, monkeypatch
):
    containers = [new_container((f"f{i}.jpg", make_face_image(tmp_path / f"{i}.jpg"))) for i in range(3)]
    job_ids = [client.post(f"/analyse/image/ip/{c.container_name}").json["job_id"] for c in containers]
    monkeypatch.setattr("analysis.worker.lifecycle.retry_delay_seconds", lambda attempt: 0)
    real_run = OpenFaceRunner.run
    calls = []

    def crash_first_run(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            monkeypatch.setenv("OPENFACE_STANDIN_EXIT", "-11")
        else:
            monkeypatch.delenv("OPENFACE_STANDIN_EXIT", raising=False)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(OpenFaceRunner, "run", crash_first_run)
    work(settings, openface_processes=1)
    # One shared run crashed; each job was then tried again in a run of its own.
    assert [run["args"].count("-f") for run in runs()] == [3, 1, 1, 1]
    for job_id in job_ids:
        job = client.get(f"/jobs/{job_id}").json
        assert job["status"] == "succeeded" and job["attempts"] == 2


def process_is_running(pid: int) -> bool:
    """Alive and not a zombie (a zombie only waits for its parent to collect it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# OpenFace slow while the first worker runs: the executables before they read an input, or each engine request.
SLOW = {"cli": "OPENFACE_STANDIN_SLEEP", "resident": "OPENFACE_STANDIN_ENGINE_SLEEP"}


@pytest.mark.parametrize("engine", sorted(SLOW))
def test_a_batch_killed_mid_run_ends_with_every_job_done_once(service_factory, new_container, tmp_path, engine):
    """SIGKILL the worker process during a batch: the jobs come back, and each finishes exactly once."""
    runs_log = tmp_path / "runs.jsonl"
    service = service_factory(
        OPENFACE_STANDIN_LOG=str(runs_log),
        OPENFACE_ENGINE=engine,
        **{SLOW[engine]: "30"},
        QUEUE_VISIBILITY_SECONDS="10",
        TMPDIR=str(tmp_path),
    )
    containers = [new_container((f"f{i}.jpg", make_face_image(tmp_path / f"{i}.jpg"))) for i in range(4)]
    job_ids = [service.analyse("image", "ip", c.container_name).json()["job_id"] for c in containers]
    deadline = time.monotonic() + 30
    while not (runs_log.exists() and all(service.job(j)["status"] == "running" for j in job_ids)):
        assert time.monotonic() < deadline, service.log("worker")
        time.sleep(0.2)
    worker = next(p for p in service.processes if p.name == "worker")
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    # OpenFace (the executables, or the engines), in a session of its own, dies with the worker.
    for run in runs_log.read_text().splitlines():
        pid = json.loads(run)["pid"]
        deadline = time.monotonic() + 10
        while process_is_running(pid):
            assert time.monotonic() < deadline, f"OpenFace (pid {pid}) outlived its worker"
            time.sleep(0.1)
    assert list(tmp_path.glob("openface-job-*")), "the killed worker's folder is there to be swept"

    service.env.pop(SLOW[engine])
    service.start_worker()
    for job_id in job_ids:
        job = service.wait_for_job(job_id, timeout=60)
        assert job["status"] == "succeeded" and job["attempts"] == 2
    for container, job_id in zip(containers, job_ids):
        manifests = [
            b.name for b in container.list_blobs(name_starts_with="processed/_jobs/") if b.name.endswith(".json")
        ]
        assert manifests == [job_manifest_name(job_id)]
    assert not list(tmp_path.glob("openface-job-*")), "the new worker swept the dead one's folder"


def test_random_kills_during_faults_lose_nothing_and_answer_each_job_once(service_factory, new_container, tmp_path):
    """Good uploads among poison, memory-hungry and huge ones; the worker SIGKILLed at random moments."""
    rng = random.Random(2026)
    service = service_factory(MAX_ATTEMPTS="4", OPENFACE_MEMORY_LIMIT_MB="1500", TMPDIR=str(tmp_path))
    uploads = {f"good-{n}": make_face_image(tmp_path / f"g{n}.jpg", seconds=0.5) for n in range(8)}
    uploads["poison"] = make_face_image(tmp_path / "p.jpg", crash=True)
    uploads["hungry"] = make_face_image(tmp_path / "h.jpg", memory_mb=4000)
    uploads["huge"] = make_png_header(tmp_path / "huge.png", 30000, 30000)
    containers = {kind: new_container((f"{kind}{path.suffix}", path)) for kind, path in uploads.items()}
    job_ids = {
        kind: service.analyse("image", "ip", made.container_name).json()["job_id"] for kind, made in containers.items()
    }
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 4))
        service.kill_worker()
        service.start_worker()
    jobs = {kind: service.wait_for_job(job_id, timeout=240) for kind, job_id in job_ids.items()}
    statuses = {kind: {r["status"] for r in job["results"]} for kind, job in jobs.items()}
    for kind, job in jobs.items():
        expected = {
            "poison": ("failed", {"failed"}),
            "hungry": ("succeeded", {"failed"}),
            "huge": ("succeeded", {"too_large"}),
        }.get(kind, ("succeeded", {"analysed"}))
        assert (job["status"], statuses[kind]) == expected, (kind, job)
    for kind, made in containers.items():
        manifests = [b.name for b in made.list_blobs(name_starts_with="processed/_jobs/") if b.name.endswith(".json")]
        assert manifests == [job_manifest_name(job_ids[kind])]
        summary = json.loads(made.download_blob(f"processed/{kind}.summary.json").readall())
        assert summary["job_id"] == job_ids[kind]
    deadline = time.monotonic() + 10  # the last worker's batches are over: their folders go with them
    while list(tmp_path.glob("openface-job-*")):
        assert time.monotonic() < deadline, "a batch folder was left behind"
        time.sleep(0.2)
