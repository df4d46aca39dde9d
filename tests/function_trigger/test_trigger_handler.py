"""The function's handler, driven with real azure.functions objects against the real service and Azurite."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import pytest
import trigger
from service_client import ServiceCallError
from trigger_testkit import (
    closed_port_url,
    cloud_event_payload,
    decode_event,
    event_grid_payload,
    fast_client,
    jpeg_bytes,
    mp4_bytes,
    png_bytes,
    upload,
)


def blob_names(container) -> set[str]:
    return {blob.name for blob in container.list_blobs()}


# --------------------------------------------------------------------------
# Media starts the right analysis


def test_image_posed_upload_starts_an_image_job(container, live_service, trigger_client, media_storage):
    upload(container, "face.jpg", jpeg_bytes(), content_type="image/jpeg", metadata={"media_type": "posed"})
    event = decode_event(event_grid_payload(container, "face.jpg"))

    outcome = trigger.handle_event(event, service=trigger_client, blob_service=media_storage)

    assert outcome.action == "called", outcome
    assert (outcome.media, outcome.media_type, outcome.status_code) == ("image", "posed", 202)
    assert outcome.container == container.container_name and outcome.blob == "face.jpg"
    job = live_service.job(outcome.job_id)  # what the worker then does: tests/test_worker.py
    assert (job["media"], job["media_type"], job["inputs"][0]["name"]) == ("image", "posed", "face.jpg")


def test_video_wild_upload_starts_video_job(container, live_service, trigger_client, media_storage):
    upload(container, "clip.mp4", mp4_bytes(frames=4), content_type="video/mp4", metadata={"Media_Type": "WILD"})
    event = decode_event(event_grid_payload(container, "clip.mp4"))

    outcome = trigger.handle_event(event, service=trigger_client, blob_service=media_storage)

    assert (outcome.action, outcome.media, outcome.media_type) == ("called", "video", "wild"), outcome
    job = live_service.job(outcome.job_id)
    assert (job["media"], job["media_type"], job["inputs"][0]["name"]) == ("video", "wild", "clip.mp4")


@pytest.mark.parametrize("value, expected", [("ip", "ip"), ("iw", "iw"), ("Posed", "posed")])
def test_media_type_metadata_values(container, live_service, trigger_client, value, expected, media_storage):
    upload(container, "p.jpg", jpeg_bytes(), content_type="image/jpeg", metadata={"media_type": value})
    outcome = trigger.handle_event(
        decode_event(event_grid_payload(container, "p.jpg")), service=trigger_client, blob_service=media_storage
    )
    assert (outcome.action, outcome.media_type) == ("called", expected), outcome


def test_faces_and_outputs_metadata_become_the_requests_options(container, live_service, trigger_client, media_storage):
    upload(
        container,
        "crowd.mp4",
        mp4_bytes(),
        content_type="video/mp4",
        metadata={"Faces": "Multi", "outputs": "tracked, hog"},
    )
    outcome = trigger.handle_event(
        decode_event(event_grid_payload(container, "crowd.mp4")), service=trigger_client, blob_service=media_storage
    )
    assert outcome.action == "called", outcome
    job = live_service.job(outcome.job_id)
    assert (job["faces"], job["extra_outputs"]) == ("multi", ["hog", "tracked"])


@pytest.mark.parametrize("metadata", [{"faces": "crowd"}, {"outputs": "hog,thermal"}])
def test_unknown_option_metadata_is_rejected_without_a_call(container, no_call_client, caplog, media_storage, metadata):
    upload(container, "odd.mp4", mp4_bytes(), content_type="video/mp4", metadata=metadata)
    with caplog.at_level(logging.INFO, logger="function_trigger"):
        outcome = trigger.handle_event(
            decode_event(event_grid_payload(container, "odd.mp4")), service=no_call_client, blob_service=media_storage
        )
    value = next(iter(metadata.values()))
    assert outcome.action == "rejected" and value in outcome.reason, outcome
    assert any(r.levelno == logging.ERROR and value in r.getMessage() for r in caplog.records)


def test_without_metadata_the_default_media_type_applies(container, live_service, trigger_client, media_storage):
    upload(container, "plain.jpg", jpeg_bytes(), content_type="image/jpeg")
    event = decode_event(event_grid_payload(container, "plain.jpg"))
    blob_service = media_storage

    outcome = trigger.handle_event(event, service=trigger_client, blob_service=blob_service)
    assert (outcome.action, outcome.media_type) == ("called", "ip"), outcome
    assert live_service.job(outcome.job_id)["media_type"] == "posed"

    wild_default = fast_client(live_service.url, live_service.api_key, default_media_type="IW")
    outcome = trigger.handle_event(event, service=wild_default, blob_service=blob_service)
    assert (outcome.action, outcome.media_type) == ("called", "iw"), outcome
    assert live_service.job(outcome.job_id)["media_type"] == "wild"


def test_kind_comes_from_extension_when_content_type_is_generic(container, live_service, trigger_client, media_storage):
    upload(container, "scan.PNG", png_bytes(), content_type="application/octet-stream")
    upload(container, "take.mov", mp4_bytes(), content_type="application/octet-stream")
    blob_service = media_storage

    image = trigger.handle_event(
        decode_event(event_grid_payload(container, "scan.PNG")), service=trigger_client, blob_service=blob_service
    )
    video = trigger.handle_event(
        decode_event(event_grid_payload(container, "take.mov")), service=trigger_client, blob_service=blob_service
    )
    assert (image.action, image.media) == ("called", "image"), image
    assert (video.action, video.media) == ("called", "video"), video


def test_cloud_event_schema_is_handled_too(container, live_service, trigger_client, media_storage):
    upload(container, "ce.jpg", jpeg_bytes(), content_type="image/jpeg", metadata={"media_type": "wild"})
    event = decode_event(cloud_event_payload(container, "ce.jpg"))
    assert type(event).__name__ == "CloudEvent"

    outcome = trigger.handle_event(event, service=trigger_client, blob_service=media_storage)
    assert (outcome.action, outcome.media, outcome.media_type) == ("called", "image", "wild"), outcome


# --------------------------------------------------------------------------
# What is not analysed: never reaches the service


def test_non_media_is_skipped_without_calling_the_service(container, no_call_client, media_storage):
    upload(container, "notes.txt", b"hello", content_type="text/plain")
    upload(container, "data.bin", b"\x00\x01\x02", content_type="application/octet-stream")
    upload(container, "photo.jpg.json", b"{}", content_type="application/json")
    upload(container, "folder", b"", metadata={"hdi_isfolder": "true"})
    blob_service = media_storage

    for name in ("notes.txt", "data.bin", "photo.jpg.json"):
        outcome = trigger.handle_event(
            decode_event(event_grid_payload(container, name)), service=no_call_client, blob_service=blob_service
        )
        assert outcome.action == "skipped", outcome
        assert outcome.reason.startswith("not media"), outcome
        assert outcome.status_code is None
    marker = trigger.handle_event(
        decode_event(event_grid_payload(container, "folder")), service=no_call_client, blob_service=blob_service
    )
    assert (marker.action, marker.reason) == ("skipped", "directory marker")


def test_processed_outputs_never_loop_back_into_analysis(container, no_call_client, media_storage):
    blob_service = media_storage
    # What a job writes, and an output that looks like media, as an annotated frame would.
    upload(container, "processed/loop.csv", b"face, confidence\n0, 0.98\n", content_type="text/csv")
    upload(container, "processed/loop.summary.json", b"{}", content_type="application/json")
    upload(container, "processed/_jobs/0123.json", b"{}", content_type="application/json")
    upload(container, "processed/loop_annotated.jpg", jpeg_bytes(), content_type="image/jpeg")

    outputs = sorted(name for name in blob_names(container) if name.startswith("processed/"))
    assert len(outputs) == 4
    for name in outputs:
        skipped = trigger.handle_event(
            decode_event(event_grid_payload(container, name)), service=no_call_client, blob_service=blob_service
        )
        assert (skipped.action, skipped.reason) == ("skipped", "processed/ holds our own outputs"), skipped


def test_other_events_and_incomplete_files_are_skipped(container, no_call_client, media_storage):
    upload(container, "gone.jpg", jpeg_bytes(), content_type="image/jpeg")
    deleted = decode_event(event_grid_payload(container, "gone.jpg", event_type="Microsoft.Storage.BlobDeleted"))
    created_empty = decode_event(event_grid_payload(container, "gone.jpg", api="CreateFile"))
    blob_service = media_storage

    assert trigger.handle_event(deleted, service=no_call_client, blob_service=blob_service).action == "skipped"
    assert trigger.handle_event(created_empty, service=no_call_client, blob_service=blob_service).action == "skipped"


# --------------------------------------------------------------------------
# Every upload that looks like media gets an answer in storage


def summary_of(container, stem):
    return json.loads(container.download_blob(f"processed/{stem}.summary.json").readall())


@pytest.mark.parametrize(
    "name, data, content_type, media, status, reason",
    [
        ("empty.jpg", b"", "image/jpeg", "image", "unreadable", "the file is empty"),
        ("empty.mp4", b"", None, "video", "unreadable", "the file is empty"),
        ("anim.gif", b"GIF89a" + bytes(20), "image/gif", "image", "unreadable", "not an image format"),
        ("face.mp4", None, "video/mp4", "image", "analysed", None),  # an image named and typed as a video
    ],
)
def test_media_looking_uploads_end_with_a_summary(
    container, live_service, trigger_client, media_storage, name, data, content_type, media, status, reason
):
    upload(container, name, jpeg_bytes() if data is None else data, content_type=content_type)
    outcome = trigger.handle_event(
        decode_event(event_grid_payload(container, name)), service=trigger_client, blob_service=media_storage
    )
    assert (outcome.action, outcome.media) == ("called", media), outcome
    assert live_service.wait_for_job(outcome.job_id)["status"] == "succeeded"
    summary = summary_of(container, name.rsplit(".", 1)[0])
    assert summary["status"] == status and summary["source_blob"] == name
    assert (reason or "") in (summary["reason"] or "")


def test_blob_deleted_before_delivery_is_skipped(container, no_call_client, media_storage):
    upload(container, "brief.jpg", jpeg_bytes(), content_type="image/jpeg")
    event = decode_event(event_grid_payload(container, "brief.jpg"))
    container.delete_blob("brief.jpg")

    outcome = trigger.handle_event(event, service=no_call_client, blob_service=media_storage)
    assert (outcome.action, outcome.reason) == ("skipped", "blob no longer exists"), outcome


def test_unknown_media_type_metadata_is_rejected_without_a_call(container, no_call_client, caplog, media_storage):
    upload(container, "odd.jpg", jpeg_bytes(), content_type="image/jpeg", metadata={"media_type": "sideways"})
    event = decode_event(event_grid_payload(container, "odd.jpg"))

    with caplog.at_level(logging.INFO, logger="function_trigger"):
        outcome = trigger.handle_event(event, service=no_call_client, blob_service=media_storage)
    assert outcome.action == "rejected" and "sideways" in outcome.reason, outcome
    assert any(r.levelno == logging.ERROR and "sideways" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------
# Failures: retried (5xx, connection) or logged (4xx)


def test_service_down_raises_after_retries_then_redelivery_succeeds(
    container, live_service, service_factory, media_storage
):
    service = service_factory(start=False)
    upload(container, "later.jpg", jpeg_bytes(), content_type="image/jpeg", metadata={"media_type": "posed"})
    event = decode_event(event_grid_payload(container, "later.jpg"))
    blob_service = media_storage
    down_client = fast_client(service.url, service.api_key, service_max_attempts=3)

    with pytest.raises(ServiceCallError) as raised:
        trigger.handle_event(event, service=down_client, blob_service=blob_service)
    assert raised.value.attempts == 3

    service.start()
    # The runtime delivers the same event again once the function failed.
    outcome = trigger.handle_event(event, service=down_client, blob_service=blob_service)
    assert (outcome.action, outcome.status_code, outcome.attempts) == ("called", 202, 1), outcome
    assert service.job(outcome.job_id)["inputs"][0]["name"] == "later.jpg"


def test_service_coming_up_during_backoff_is_retried_within_one_call(
    container, live_service, service_factory, caplog, media_storage
):
    service = service_factory(start=False)
    upload(container, "soon.jpg", jpeg_bytes(), content_type="image/jpeg")
    event = decode_event(event_grid_payload(container, "soon.jpg"))
    patient = fast_client(
        service.url,
        service.api_key,
        service_max_attempts=200,
        service_backoff_seconds=0.2,
        service_backoff_max_seconds=0.5,
        service_retry_budget_seconds=60,
    )
    starter = threading.Timer(1.0, service.start)
    starter.start()
    try:
        with caplog.at_level(logging.WARNING, logger="function_trigger"):
            outcome = trigger.handle_event(event, service=patient, blob_service=media_storage)
    finally:
        starter.join()

    assert (outcome.action, outcome.status_code) == ("called", 202), outcome
    assert outcome.attempts > 1
    assert any("retrying" in r.getMessage() and container.container_name in r.getMessage() for r in caplog.records)
    assert service.job(outcome.job_id)["media"] == "image"


def test_retries_stay_within_the_time_budget(container, media_storage):
    upload(container, "budget.jpg", jpeg_bytes(), content_type="image/jpeg")
    event = decode_event(event_grid_payload(container, "budget.jpg"))
    tight = fast_client(
        closed_port_url(),
        "k",
        service_max_attempts=100,
        service_backoff_seconds=0.3,
        service_backoff_max_seconds=0.6,
        service_retry_budget_seconds=2,
    )
    started = time.monotonic()
    with pytest.raises(ServiceCallError) as raised:
        trigger.handle_event(event, service=tight, blob_service=media_storage)
    assert time.monotonic() - started < 4
    assert 1 < raised.value.attempts < 100


def test_4xx_is_logged_with_its_reason_and_not_retried(container, live_service, caplog, media_storage):
    upload(container, "key.jpg", jpeg_bytes(), content_type="image/jpeg")
    event = decode_event(event_grid_payload(container, "key.jpg"))
    wrong_key = fast_client(live_service.url, "not-the-key-" + uuid.uuid4().hex)

    with caplog.at_level(logging.INFO, logger="function_trigger"):
        outcome = trigger.handle_event(event, service=wrong_key, blob_service=media_storage)

    assert (outcome.action, outcome.status_code, outcome.attempts) == ("rejected", 401, 1), outcome
    assert outcome.reason.startswith("HTTP 401")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("401" in message and container.container_name in message for message in errors), errors
    assert not any("retrying" in r.getMessage() for r in caplog.records)


def test_missing_container_404_is_answered_not_retried(trigger_client):
    ghost = str(uuid.uuid4())  # a container deleted between the upload and the call
    reply = trigger_client.analyse("image", "ip", ghost, {"container": ghost, "blob": "x.jpg"})
    assert (reply.status_code, reply.attempts) == (404, 1)
    assert reply.error_text.startswith("container_not_found: ") and ghost in reply.error_text


# --------------------------------------------------------------------------
# Idempotency


def test_same_upload_delivered_twice_gives_one_job(container, live_service, trigger_client, media_storage):
    upload(container, "twice.jpg", jpeg_bytes(), content_type="image/jpeg", metadata={"media_type": "wild"})
    payload = event_grid_payload(container, "twice.jpg")
    blob_service = media_storage

    first = trigger.handle_event(decode_event(payload), service=trigger_client, blob_service=blob_service)
    second = trigger.handle_event(decode_event(payload), service=trigger_client, blob_service=blob_service)

    assert (first.action, first.status_code) == ("called", 202), first
    assert (second.action, second.status_code) == ("called", 200), second
    assert first.job_id == second.job_id
    job = live_service.wait_for_job(first.job_id)
    assert job["status"] == "succeeded"
    # Delivered again after the job finished: still the same job.
    third = trigger.handle_event(decode_event(payload), service=trigger_client, blob_service=blob_service)
    assert (third.status_code, third.job_id) == (200, first.job_id)


@pytest.mark.parametrize("name", ["openface-jobs", "azure-webjobs-hosts", "insights-logs-storageread"])
def test_uploads_to_containers_that_are_no_uploads_are_skipped_without_a_call(
    name, azurite, no_call_client, media_storage
):
    """The records container (as the function's JOB_RECORDS_CONTAINER names it) and Azure's own."""
    container = media_storage.get_container_client(name)
    if not container.exists():
        container.create_container()
    upload(container, "look-alike.jpg", jpeg_bytes(), content_type="image/jpeg")
    outcome = trigger.handle_event(
        decode_event(event_grid_payload(container, "look-alike.jpg")),
        service=no_call_client,
        blob_service=media_storage,
    )
    assert outcome.action == "skipped" and "not an upload container" in outcome.reason, outcome


def test_containers_outside_the_upload_pattern_are_skipped(container, media_storage):
    client = fast_client(closed_port_url(), "unused", service_max_attempts=1, upload_container_pattern="upload-[0-9]+")
    upload(container, "face.jpg", jpeg_bytes(), content_type="image/jpeg")
    outcome = trigger.handle_event(
        decode_event(event_grid_payload(container, "face.jpg")), service=client, blob_service=media_storage
    )
    assert outcome.action == "skipped" and "UPLOAD_CONTAINER_PATTERN" in outcome.reason, outcome
