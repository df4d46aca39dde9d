"""The real thing end to end: gunicorn (bin/web) and a worker process (bin/worker)
against Azurite, an upload, a POST, polling, and the CSV read back from storage."""

import json
import signal
import time

import pytest
import requests

from analysis.names import job_manifest_name
from harness import SHARED_MEDIA
from openface_standin.media import make_face_image, make_video


def test_upload_analyse_poll_and_read_back(live_service, container, tmp_path):
    container.upload_blob("face.jpg", make_face_image(tmp_path / "f.jpg").read_bytes())
    response = live_service.analyse("image", "IP", container.container_name)
    assert response.status_code == 202
    job = live_service.wait_for_job(response.json()["job_id"])

    assert job["status"] == "succeeded", job
    csv = container.download_blob("processed/face.csv").readall().decode()
    header = csv.splitlines()[0].split(", ")
    assert header[:3] == ["face", "confidence", "gaze_0_x"] and len(header) == 711
    summary = json.loads(container.download_blob("processed/face.summary.json").readall())
    assert summary["status"] == "analysed" and summary["summary"]["faces"] == 1
    assert container.get_blob_client(job_manifest_name(job["job_id"])).exists()


def test_video_through_the_legacy_get_route(live_service, container, tmp_path):
    container.upload_blob("clip.mp4", make_video(tmp_path / "c.mp4", frames=20).read_bytes())
    response = requests.get(
        f"{live_service.url}/analyse/video/wild/{container.container_name}", headers=live_service.headers(), timeout=30
    )
    assert response.status_code == 202
    job = live_service.wait_for_job(response.json()["job_id"])
    assert job["status"] == "succeeded" and job["media_type"] == "wild"
    rows = container.download_blob("processed/_options/wild/clip.csv").readall().decode().splitlines()
    assert rows[0].startswith("frame, face_id, timestamp, confidence, success, ") and len(rows) == 21


def test_reference_media_when_present(live_service, container):
    """The sample media OpenFace's reference outputs came from, where they are at hand."""
    if not SHARED_MEDIA.is_dir():
        import pytest

        pytest.skip("../shared/media not present")
    for name in ("sample1.jpg", "noface.png", "corrupt.mp4"):
        container.upload_blob(name, (SHARED_MEDIA / name).read_bytes())
    container.upload_blob("default.wmv", (SHARED_MEDIA / "default.wmv").read_bytes())
    images = live_service.wait_for_job(live_service.analyse("image", "ip", container.container_name).json()["job_id"])
    videos = live_service.wait_for_job(live_service.analyse("video", "ip", container.container_name).json()["job_id"])
    statuses = {r["blob"]: r["status"] for r in images["results"] + videos["results"] if r["status"] != "skipped"}
    assert statuses == {
        "sample1.jpg": "analysed",
        "noface.png": "no_face",
        "corrupt.mp4": "unreadable",
        "default.wmv": "analysed",
    }


def test_same_upload_twice_is_one_job(live_service, container, tmp_path):
    container.upload_blob("face.jpg", make_face_image(tmp_path / "f.jpg").read_bytes())
    first = live_service.analyse("image", "ip", container.container_name)
    second = live_service.analyse("image", "posed", container.container_name)
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["job_id"] == second.json()["job_id"]


@pytest.mark.parametrize(
    "engine,slow", [("cli", "OPENFACE_STANDIN_SLEEP"), ("resident", "OPENFACE_STANDIN_ENGINE_SLEEP")]
)
def test_worker_hands_back_its_job_on_sigterm(service_factory, container, tmp_path, engine, slow):
    service = service_factory(OPENFACE_ENGINE=engine, WORKER_SHUTDOWN_GRACE_SECONDS="1", **{slow: "120"})
    container.upload_blob("face.jpg", make_face_image(tmp_path / "f.jpg").read_bytes())
    job_id = service.analyse("image", "ip", container.container_name).json()["job_id"]
    deadline = time.monotonic() + 30
    while service.job(job_id)["status"] != "running":
        assert time.monotonic() < deadline, service.log("worker")
        time.sleep(0.2)

    worker = next(p for p in service.processes if p.name == "worker")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    job = service.job(job_id)
    assert job["status"] == "queued" and "handed back" in job["error"]
    assert "handed back" in service.log("worker")

    # A new worker (without the slow stand-in) picks the job up straight away.
    service.env.pop(slow)
    service.start_worker()
    assert service.wait_for_job(job_id)["status"] == "succeeded"


def test_logs_are_json_with_job_context(live_service, container, tmp_path):
    container.upload_blob("face.jpg", make_face_image(tmp_path / "f.jpg").read_bytes())
    job_id = live_service.analyse("image", "ip", container.container_name).json()["job_id"]
    live_service.wait_for_job(job_id)
    lines = [json.loads(line) for line in live_service.log("worker", tail=10**7).splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("job_id") == job_id]
    assert mine and all(line["container"] == container.container_name for line in mine)
    assert any(line.get("blob") == "face.jpg" for line in mine)
