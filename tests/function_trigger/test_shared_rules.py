"""The trigger and the service judge an upload alike: the kind the trigger starts a job of is the
kind whose job takes the blob on, and what the trigger skips no job takes on.

Every extension and content type either side knows, with content that is a real image, a real
video, empty or text. The trigger's side is its real handler against the real service; the
service's side is the job's real choice of media (analysis/worker/plan.py).
"""

from __future__ import annotations

import uuid

import pytest
import trigger
from trigger_testkit import decode_event, event_grid_payload, jpeg_bytes, mp4_bytes, upload

from analysis.job import Job
from analysis.options import Options
from analysis.storage import MediaStore
from analysis.worker.plan import BlobFacts, JobFailed, choose_media
from analysis.worker.publish import ResultWriter
from media_rules import CLAIMED_EXTENSIONS, READABLE_EXTENSIONS, Media, MediaType

EXTENSIONS = sorted(set().union(*CLAIMED_EXTENSIONS.values(), *READABLE_EXTENSIONS.values())) + ["txt", "bin", ""]
CONTENT_TYPES = [
    None,
    "application/octet-stream",
    "image/png",
    "image/gif",
    "video/mp4",
    "video/x-ms-wmv",
    "IMAGE/JPEG; charset=binary",
    "text/plain",
]
CONTENTS = {"jpeg": jpeg_bytes, "mp4": mp4_bytes, "empty": lambda: b"", "text": lambda: b"just some words"}

CASES = (
    [(f"upload.{ext}" if ext else "upload", None, content) for ext in EXTENSIONS for content in ("empty", "text")]
    + [("upload", ctype, content) for ctype in CONTENT_TYPES for content in ("empty", "text")]
    + [
        (name, ctype, content)
        for name in ("face.mp4", "clip.jpg", "upload.txt")
        for ctype in (None, "video/mp4", "image/jpeg")
        for content in ("jpeg", "mp4")
    ]
)


def service_takes(blob_service, settings, container: str, media: Media) -> bool:
    """Whether a job of this kind over the container answers the blob (gives it a summary)."""
    store = MediaStore(blob_service)
    job = Job.new(container, media, Options(MediaType.POSED), store.list_inputs(container).inputs)
    results = ResultWriter(job, store)
    try:
        chosen = choose_media(job, BlobFacts(store), results, settings)
    except JobFailed:  # nothing in the container for a job of this kind
        return False
    # The trigger's job may have answered it already: a result to reuse is an answer too.
    return bool(chosen) or any(result["status"] != "skipped" for result in results.report.results)


@pytest.mark.parametrize("name, content_type, content", CASES)
def test_trigger_and_service_agree(blob_service, settings, trigger_client, media_storage, name, content_type, content):
    container = blob_service.create_container(str(uuid.uuid4()))
    try:
        upload(container, name, CONTENTS[content](), content_type=content_type)
        result = trigger.handle_event(
            decode_event(event_grid_payload(container, name)), service=trigger_client, blob_service=media_storage
        )
        takes = {media.value: service_takes(blob_service, settings, container.container_name, media) for media in Media}
        if result.action == "called":
            assert takes == {media.value: media.value == result.media for media in Media}, result
        else:
            assert result.action == "skipped" and takes == {"image": False, "video": False}, result
    finally:
        container.delete_container()
