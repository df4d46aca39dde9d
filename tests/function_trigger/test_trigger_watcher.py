"""The local watcher: Azurite uploads start analyses with no manual call."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trigger_testkit import closed_port_url, fast_config, jpeg_bytes, mp4_bytes, upload

import local_watcher
import trigger

ROOT = Path(__file__).resolve().parents[2]


def handler_for(config, blob_service):
    def handle(event):
        return trigger.handle_event(event, config=config, blob_service=blob_service)
    return handle


def ours(deliveries, container):
    """Deliveries of uploads to this test's container.

    The service writes its outputs (and job manifests) under processed/ while
    a test runs; the watcher delivers those too, and the handler must skip them.
    """
    mine = [d for d in deliveries if d.container == container.container_name]
    outputs = [d for d in mine if d.blob.startswith("processed/")]
    assert all(d.outcome is not None and d.outcome.action == "skipped" for d in outputs), outputs
    return [d for d in mine if d not in outputs]


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

    event = local_watcher.blob_created_event(
        account=media_storage.account_name, container=container.container_name, blob="dir/a b.jpg", url=url,
        etag=props.etag, content_type="image/jpeg", content_length=props.size, last_modified=props.last_modified)

    assert type(event).__module__ == "azure.functions._eventgrid" and type(event).__name__ == "EventGridEvent"
    assert event.event_type == "Microsoft.Storage.BlobCreated"
    assert event.subject == f"/blobServices/default/containers/{container.container_name}/blobs/dir/a b.jpg"
    assert event.topic.endswith(f"/storageAccounts/{media_storage.account_name}")
    data = event.get_json()
    assert data["api"] == "PutBlob" and data["blobType"] == "BlockBlob"
    assert (data["eTag"], data["contentLength"], data["url"]) == (props.etag, props.size, url)
    ref, _ = trigger.blob_ref_from_event(event)
    assert (ref.container, ref.name, ref.content_type) == (container.container_name, "dir/a b.jpg", "image/jpeg")


def test_existing_blobs_count_as_seen_and_new_ones_are_delivered_once(container, live_service, config,
                                                                       media_storage):
    upload(container, "before.jpg", jpeg_bytes(), content_type="image/jpeg")
    watcher = local_watcher.Watcher(media_storage, handler_for(config, media_storage))
    watcher.prime()
    assert ours(watcher.poll_once(), container) == []

    upload(container, "after.mp4", mp4_bytes(), content_type="video/mp4", metadata={"media_type": "wild"})
    delivered = ours(watcher.poll_once(), container)
    assert [d.blob for d in delivered] == ["after.mp4"]
    outcome = delivered[0].outcome
    assert (outcome.action, outcome.media, outcome.media_type, outcome.status_code) == (
        "called", "video", "wild", 202), outcome
    assert ours(watcher.poll_once(), container) == []

    # An overwrite is a new upload (new ETag), as Event Grid sees it.
    upload(container, "after.mp4", mp4_bytes(frames=6), content_type="video/mp4", metadata={"media_type": "wild"})
    assert [d.blob for d in ours(watcher.poll_once(), container)] == ["after.mp4"]

    # --from-start delivers what was already there, our outputs included (and skipped).
    fresh = local_watcher.Watcher(media_storage, handler_for(config, media_storage),
                                  containers=[container.container_name])
    fresh.prime(from_start=True)
    delivered = fresh.poll_once()
    assert {d.container for d in delivered} == {container.container_name}
    uploads = sorted(d.blob for d in delivered if not d.blob.startswith("processed/"))
    assert uploads == ["after.mp4", "before.jpg"]
    assert all(d.outcome.action == "skipped" for d in delivered if d.blob.startswith("processed/"))


def test_failed_delivery_is_redelivered_then_dead_lettered(container, media_storage, service_factory):
    service = service_factory(start=False)
    config = fast_config(service.url, service.api_key, max_attempts=1)
    watcher = local_watcher.Watcher(media_storage, handler_for(config, media_storage), retry_seconds=0.3,
                                    max_deliveries=5)
    watcher.prime()
    upload(container, "wait.jpg", jpeg_bytes(), content_type="image/jpeg")

    first = ours(watcher.poll_once(), container)
    assert len(first) == 1 and isinstance(first[0].error, trigger.ServiceCallError)
    assert ours(watcher.poll_once(), container) == []  # not due yet

    service.start()
    time.sleep(0.4)
    second = ours(watcher.poll_once(), container)
    assert len(second) == 1 and second[0].outcome.action == "called", second
    assert service.wait_for_job(second[0].outcome.job_id)["status"] == "succeeded"

    # A service that never comes back: the event is dead-lettered after max_deliveries.
    gone = fast_config(closed_port_url(), "k", max_attempts=1)
    stubborn = local_watcher.Watcher(media_storage, handler_for(gone, media_storage), retry_seconds=0.05,
                                     max_deliveries=2)
    stubborn.prime()
    upload(container, "never.jpg", jpeg_bytes(), content_type="image/jpeg")
    assert ours(stubborn.poll_once(), container)[0].dead_lettered is False
    time.sleep(0.1)
    last = ours(stubborn.poll_once(), container)
    assert len(last) == 1 and last[0].dead_lettered
    time.sleep(0.1)
    assert ours(stubborn.poll_once(), container) == []


def test_watcher_process_turns_an_upload_into_a_csv(container, live_service, azurite, tmp_path):
    log_path = tmp_path / "watcher.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_STORAGE_", "SERVICE_", "MediaStorage"))}
    env.update(
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
        SERVICE_URL=live_service.url,
        API_KEYS=f"{live_service.api_key},another",  # SERVICE_API_KEY falls back to the service's first key
        WATCH_INTERVAL_SECONDS="0.3",
        PYTHON=sys.executable,
    )
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([str(ROOT / "bin" / "watcher")], env=env, cwd=ROOT, stdout=log_file,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "treated as already seen" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)

        upload(container, "selfie.jpg", jpeg_bytes(), content_type="image/jpeg", metadata={"media_type": "wild"})
        wait_for_blob(container, "processed/selfie.csv")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("watcher did not stop on SIGTERM")
    assert code == 0

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "message", "container", "blob"} <= set(line) for line in lines), lines
    called = [line for line in lines if line.get("job_id") and line["container"] == container.container_name]
    assert called and called[0]["blob"] == "selfie.jpg" and called[0]["media_type"] == "wild", lines
    assert any(line["message"] == "watcher stopped" for line in lines)


def test_watcher_refuses_to_start_without_settings(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_STORAGE_", "SERVICE_", "API_KEYS"))}
    env["PYTHON"] = sys.executable
    done = subprocess.run([str(ROOT / "bin" / "watcher"), "--once"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert "SERVICE_URL" in done.stdout
