"""The local watcher: Azurite uploads start analyses with no manual call."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import blob_events
import local_watcher
import pytest
import trigger
from service_client import ServiceCallError
from trigger_settings import TriggerSettings
from trigger_testkit import closed_port_url, fast_client, jpeg_bytes, mp4_bytes, upload

ROOT = Path(__file__).resolve().parents[2]


def handler_for(trigger_client, blob_service):
    def handle(event):
        return trigger.handle_event(event, service=trigger_client, blob_service=blob_service)

    return handle


def ours(deliveries, container):
    """Deliveries of uploads to this test's container; our outputs are never delivered."""
    mine = [d for d in deliveries if d.container == container.container_name]
    assert not [d for d in mine if d.blob.startswith("processed/")], mine
    return mine


def wait_for_blob(container, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if container.get_blob_client(name).exists():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{name} did not appear in {container.container_name}")


def test_event_is_the_one_event_grid_delivers(container, media_storage):
    props = upload(container, "dir/a b.jpg", jpeg_bytes(), content_type="image/jpeg")
    url = container.get_blob_client("dir/a b.jpg").url

    event = blob_events.blob_created_event(
        account=media_storage.account_name,
        container=container.container_name,
        blob="dir/a b.jpg",
        url=url,
        etag=props.etag,
        content_type="image/jpeg",
        content_length=props.size,
        last_modified=props.last_modified,
    )

    assert type(event).__module__ == "azure.functions._eventgrid" and type(event).__name__ == "EventGridEvent"
    assert event.event_type == "Microsoft.Storage.BlobCreated"
    assert event.subject == f"/blobServices/default/containers/{container.container_name}/blobs/dir/a b.jpg"
    assert event.topic.endswith(f"/storageAccounts/{media_storage.account_name}")
    data = event.get_json()
    assert data["api"] == "PutBlob" and data["blobType"] == "BlockBlob"
    assert (data["eTag"], data["contentLength"], data["url"]) == (props.etag, props.size, url)
    ref, _ = blob_events.blob_ref_from_event(event)
    assert (ref.container, ref.name, ref.etag) == (container.container_name, "dir/a b.jpg", props.etag)


def test_uploads_are_delivered_until_answered_whenever_they_came(
    container, live_service, trigger_client, media_storage
):
    upload(container, "before.jpg", jpeg_bytes(), content_type="image/jpeg")  # before the watcher exists
    watcher = local_watcher.Watcher(
        media_storage, handler_for(trigger_client, media_storage), containers=[container.container_name]
    )
    (delivered,) = ours(watcher.poll_once(), container)
    assert (delivered.blob, delivered.result.action, delivered.result.status_code) == ("before.jpg", "called", 202)
    assert ours(watcher.poll_once(), container) == []  # its job runs: not delivered twice
    live_service.wait_for_job(delivered.result.job_id)

    # A restarted watcher sees the answer in storage and leaves the upload alone.
    restarted = local_watcher.Watcher(
        media_storage, handler_for(trigger_client, media_storage), containers=[container.container_name]
    )
    assert ours(restarted.poll_once(), container) == []

    upload(container, "after.mp4", mp4_bytes(), content_type="video/mp4", metadata={"media_type": "wild"})
    delivered = ours(restarted.poll_once(), container)
    assert [d.blob for d in delivered] == ["after.mp4"]
    outcome = delivered[0].result
    assert (outcome.action, outcome.media, outcome.media_type, outcome.status_code) == (
        "called",
        "video",
        "wild",
        202,
    ), outcome
    assert ours(restarted.poll_once(), container) == []

    # An overwrite is a new upload (new ETag), as Event Grid sees it.
    upload(container, "after.mp4", mp4_bytes(frames=6), content_type="video/mp4", metadata={"media_type": "wild"})
    assert [d.blob for d in ours(restarted.poll_once(), container)] == ["after.mp4"]


def test_answered_versions_come_from_summary_metadata(container, live_service, trigger_client, media_storage):
    upload(container, "dir/ünï face.jpg", jpeg_bytes(), content_type="image/jpeg")
    upload(container, "notes.txt", b"hello", content_type="text/plain")
    watcher = local_watcher.Watcher(
        media_storage, handler_for(trigger_client, media_storage), containers=[container.container_name]
    )
    delivered = {d.blob: d for d in ours(watcher.poll_once(), container)}
    assert delivered["notes.txt"].result.action == "skipped"
    live_service.wait_for_job(delivered["dir/ünï face.jpg"].result.job_id)

    blobs = list(container.list_blobs(include=["metadata"]))
    etag = container.get_blob_client("dir/ünï face.jpg").get_blob_properties().etag.strip('"')
    assert local_watcher.answered_versions(blobs) == {("dir/ünï face.jpg", etag)}


def test_failed_delivery_is_redelivered_then_dead_lettered(container, media_storage, service_factory):
    service = service_factory(start=False)
    client = fast_client(service.url, service.api_key, service_max_attempts=1)
    clock = FakeClock()  # redelivery is due by the watcher's clock: moved here rather than waited for
    watcher = local_watcher.Watcher(
        media_storage,
        handler_for(client, media_storage),
        retry_seconds=0.3,
        max_deliveries=5,
        containers=[container.container_name],
        clock=clock,
    )
    upload(container, "wait.jpg", jpeg_bytes(), content_type="image/jpeg")

    first = ours(watcher.poll_once(), container)
    assert len(first) == 1 and isinstance(first[0].error, ServiceCallError)
    clock.advance(0.29)
    assert ours(watcher.poll_once(), container) == []  # not due yet

    service.start()
    clock.advance(0.02)
    second = ours(watcher.poll_once(), container)
    assert len(second) == 1 and (second[0].result.action, second[0].result.status_code) == ("called", 202), second

    # A service that never comes back: the event is dead-lettered after max_deliveries.
    gone = fast_client(closed_port_url(), "k", service_max_attempts=1)
    stubborn = local_watcher.Watcher(
        media_storage,
        handler_for(gone, media_storage),
        retry_seconds=0.05,
        max_deliveries=2,
        containers=[container.container_name],
        clock=clock,
    )
    upload(container, "never.jpg", jpeg_bytes(), content_type="image/jpeg")
    (first,) = [d for d in ours(stubborn.poll_once(), container) if d.blob == "never.jpg"]
    assert first.dead_lettered is False
    clock.advance(0.1)
    last = [d for d in ours(stubborn.poll_once(), container) if d.blob == "never.jpg"]
    assert len(last) == 1 and last[0].dead_lettered
    clock.advance(0.1)
    assert ours(stubborn.poll_once(), container) == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def start_watcher(env: dict, log_path: Path, *args: str) -> subprocess.Popen:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [str(ROOT / "bin" / "watcher"), *args], env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
        )


def stop_watcher(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("watcher did not stop on SIGTERM")


def test_upload_made_before_the_watcher_process_starts_is_analysed_once(container, service_factory, azurite, tmp_path):
    """The race of a late watcher: the upload lands before the watcher's first look."""
    runs = tmp_path / "openface-runs.jsonl"
    service = service_factory(OPENFACE_STANDIN_LOG=str(runs))
    upload(container, "selfie.jpg", jpeg_bytes(), content_type="image/jpeg", metadata={"media_type": "wild"})

    log_path, ready = tmp_path / "watcher.log", tmp_path / "watcher.ready"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_STORAGE_", "SERVICE_", "MediaStorage"))}
    env.update(
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
        SERVICE_URL=service.url,
        API_KEYS=f"{service.api_key},another",  # SERVICE_API_KEY falls back to the service's first key
        WATCH_INTERVAL_SECONDS="0.3",
        PYTHON=sys.executable,
    )
    proc = start_watcher(env, log_path, "--container", container.container_name, "--ready-file", str(ready))
    try:
        wait_for_blob(container, "processed/_options/wild/selfie.summary.json")
        assert ready.exists()
    finally:
        assert stop_watcher(proc) == 0

    # Started again, it finds the answer in storage and delivers nothing.
    again = subprocess.run(
        [str(ROOT / "bin" / "watcher"), "--once", "--container", container.container_name],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "delivering" not in again.stdout
    analyses = [
        line
        for line in map(json.loads, runs.read_text().splitlines())
        if line["exe"] == "FaceLandmarkImg" or line.get("event") == "request"
    ]
    assert len(analyses) == 1, analyses  # one analysis, by an engine or an executable

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "message", "container", "blob"} <= set(line) for line in lines), lines
    called = [line for line in lines if line.get("job_id") and line["container"] == container.container_name]
    assert called and called[0]["blob"] == "selfie.jpg" and called[0]["media_type"] == "wild", lines
    assert not [line for line in lines if (line["blob"] or "").startswith("processed/")]  # no noise about outputs
    assert any(line["message"] == "watcher stopped" for line in lines)


def test_watcher_refuses_to_start_without_settings(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_STORAGE_", "SERVICE_", "API_KEYS"))}
    env["PYTHON"] = sys.executable
    done = subprocess.run(
        [str(ROOT / "bin" / "watcher"), "--once"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "SERVICE_URL" in done.stdout


def test_the_records_container_is_never_listed(container, media_storage):
    """The watcher lists upload containers only: never the service's records (nor Azure's containers)."""
    upload(container, "face.jpg", jpeg_bytes(), content_type="image/jpeg")
    listed = []

    class Counting:
        """The storage client, noting which containers are listed."""

        def __getattr__(self, name):
            return getattr(media_storage, name)

        def get_container_client(self, name):
            listed.append(name)
            return media_storage.get_container_client(name)

    own = container.container_name
    settings = TriggerSettings(service_url="http://unused", service_api_key="unused", job_records_container=own)
    watcher = local_watcher.Watcher(Counting(), lambda event: None, container_problem=settings.container_problem)
    watcher._scan()
    assert own not in listed and listed
