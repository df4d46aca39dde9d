"""Which uploaded blob starts which analysis.

``function_app.py`` (Azure Functions) and ``local_watcher.py`` (Azurite,
locally) both call ``handle_event``, so the decision is the same everywhere.
For one blob:

1. blobs under ``processed/`` are our own outputs: skipped, so results never
   loop back into analysis; so are directory markers;
2. the media kind comes from the blob's first bytes, by the service's own
   rules (``media_rules``); when they are no image or video format, from
   what the upload claims (content type, else extension), so an empty or
   broken upload named as media still gets a job, and its job answers
   ``unreadable``; anything else is skipped;
3. posed or wild comes from the blob metadata ``media_type`` (``ip``,
   ``posed``, ``iw``, ``wild``; any case), else from ``DEFAULT_MEDIA_TYPE``;
   the metadata ``faces`` (``single``, ``multi``) and ``outputs`` (a comma
   list of ``aligned``, ``hog``, ``tracked``) become the request's query; an
   unknown value in any of them is ``rejected``, logged and not retried;
4. the service is called (``service_client.py``). 200/202 is ``called``;
   any other 4xx is ``rejected``, logged with its reason and not retried;
   the retries of transient failures happen in the client, which raises
   when they are spent.

Calling twice for one blob is harmless: the service gives the same job for
the same container, ETags and options.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from blob_events import BlobRef, blob_ref_from_event
from service_client import ServiceClient, ServiceReply

from media_rules import (
    EXTRA_OUTPUTS,
    SNIFF_BYTES,
    is_processed,
    judge,
    parse_extra_outputs,
    parse_faces,
    parse_media_type,
)

log = logging.getLogger("function_trigger")

METADATA_KEY = "media_type"
FACES_KEY = "faces"
OUTPUTS_KEY = "outputs"
# HDFS-style directory markers on accounts with a hierarchical namespace.
_FOLDER_METADATA_KEY = "hdi_isfolder"


@dataclass(frozen=True)
class TriggerResult:
    """What the trigger did with one blob.

    ``action``: ``called`` (the service accepted: 202 new job, 200 existing
    job), ``skipped`` (not for analysis), ``rejected`` (the service, or the
    blob's metadata, said no; retrying would not help).
    """

    action: str
    container: str
    blob: str
    reason: str
    media: str | None = None
    media_type: str | None = None
    status_code: int | None = None
    job_id: str | None = None
    status_url: str | None = None
    attempts: int = 0
    response: Mapping[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StoredBlob:
    """What the trigger reads of a blob: its properties and its first bytes."""

    metadata: Mapping[str, str]
    content_type: str | None
    head: bytes


def handle_event(event: Any, *, service: ServiceClient, blob_service: Any) -> TriggerResult:
    """Handle one Event Grid ``BlobCreated`` event (what ``function_app`` receives)."""
    ref, reason = blob_ref_from_event(event)
    if ref is None:
        log.info(
            "event skipped: %s",
            reason,
            extra={"event_id": getattr(event, "id", None), "subject": getattr(event, "subject", None)},
        )
        return TriggerResult("skipped", container="", blob="", reason=reason)
    return handle_blob(ref, service=service, blob_service=blob_service)


def handle_blob(ref: BlobRef, *, service: ServiceClient, blob_service: Any) -> TriggerResult:
    """Decide what to do with one blob and, for media, call the service."""
    extra = {"container": ref.container, "blob": ref.name, "event_id": ref.event_id}

    def skipped(reason: str, level: int = logging.INFO) -> TriggerResult:
        log.log(level, "blob skipped: %s (container=%s blob=%s)", reason, ref.container, ref.name, extra=extra)
        return TriggerResult("skipped", ref.container, ref.name, reason)

    if is_processed(ref.name):
        # Every job writes several of these: not worth a line at INFO.
        return skipped("processed/ holds our own outputs", level=logging.DEBUG)
    container_problem = service.settings.container_problem(ref.container)
    if container_problem:
        return skipped(container_problem, level=logging.DEBUG)
    blob = read_blob(blob_service, ref)
    if blob is None:
        return skipped("blob no longer exists")
    if str(blob.metadata.get(_FOLDER_METADATA_KEY, "")).lower() == "true":
        return skipped("directory marker")
    verdict = judge(ref.name, blob.content_type, blob.head)
    if verdict.kind is None:
        return skipped(f"not media (content type {blob.content_type!r}; its first bytes are no image or video)")
    media = verdict.kind.value

    media_type, source = media_type_from_metadata(blob.metadata, service.settings.default_media_type)
    if media_type is None:
        log.error("blob rejected: %s (container=%s blob=%s)", source, ref.container, ref.name, extra=extra)
        return TriggerResult("rejected", ref.container, ref.name, source, media=media)

    options, problem = options_from_metadata(blob.metadata)
    if problem:
        log.error("blob rejected: %s (container=%s blob=%s)", problem, ref.container, ref.name, extra=extra)
        return TriggerResult("rejected", ref.container, ref.name, problem, media=media, media_type=media_type)

    extra = {**extra, "media": media, "media_type": media_type, **options}
    reply = service.analyse(media, media_type, ref.container, extra, options)
    return _result(ref, media, media_type, f"media_type from {source}", reply, extra)


def media_type_from_metadata(metadata: Mapping[str, str] | None, default: str) -> tuple[str | None, str]:
    """``(media_type, source)``; ``(None, reason)`` when the metadata value is unknown."""
    value = _metadata_value(metadata, METADATA_KEY)
    if value is None:
        return default, "default"
    chosen = value.strip().lower()
    if parse_media_type(chosen) is not None:
        return chosen, "metadata"
    return None, f"blob metadata {METADATA_KEY}={value!r} is not one of ip, posed, iw, wild"


def options_from_metadata(metadata: Mapping[str, str] | None) -> tuple[dict[str, str], str | None]:
    """``(query, None)`` from the metadata ``faces`` and ``outputs``; ``({}, reason)`` for an unknown value."""
    query = {}
    faces = _metadata_value(metadata, FACES_KEY)
    if faces is not None:
        parsed = parse_faces(faces)
        if parsed is None:
            return {}, f"blob metadata {FACES_KEY}={faces!r} is not one of single, multi"
        query[FACES_KEY] = parsed.value
    outputs = _metadata_value(metadata, OUTPUTS_KEY)
    if outputs is not None:
        extras = parse_extra_outputs(outputs)
        if extras is None:
            return {}, f"blob metadata {OUTPUTS_KEY}={outputs!r} is not a comma list of {', '.join(EXTRA_OUTPUTS)}"
        if extras:
            query[OUTPUTS_KEY] = ",".join(extras)
    return query, None


def _metadata_value(metadata: Mapping[str, str] | None, wanted: str) -> str | None:
    """A metadata value by key in any case (storage keeps the case the uploader used)."""
    for key, value in (metadata or {}).items():
        if str(key).lower() == wanted:
            return str(value)
    return None


def read_blob(blob_service: Any, ref: BlobRef) -> StoredBlob | None:
    """The blob's properties and first bytes; ``None`` if it is gone. Storage errors propagate (runtime retry)."""
    client = blob_service.get_blob_client(ref.container, ref.name)
    try:
        props = client.get_blob_properties()
        head = b""
        if props.size:
            # Pinned to the version whose properties we read; a newer one has its own event.
            head = client.download_blob(
                offset=0,
                length=min(SNIFF_BYTES, props.size),
                etag=props.etag,
                match_condition=MatchConditions.IfNotModified,
            ).readall()
    except (ResourceNotFoundError, ResourceModifiedError):
        return None
    return StoredBlob(dict(props.metadata or {}), props.content_settings.content_type, head)


def _result(
    ref: BlobRef, media: str, media_type: str, why: str, reply: ServiceReply, extra: Mapping[str, Any]
) -> TriggerResult:
    """What the service's answer means for this blob, said in the log."""
    body = reply.body or {}
    if reply.status_code in (200, 201, 202):
        job_id = body.get("job_id")
        reason = "new job" if reply.status_code == 202 else "job already exists"
        log.info(
            "analysis requested: %s %s/%s for container=%s blob=%s -> HTTP %d job_id=%s (%s)",
            reason,
            media,
            media_type,
            ref.container,
            ref.name,
            reply.status_code,
            job_id,
            why,
            extra={**extra, "status_code": reply.status_code, "job_id": job_id},
        )
        return TriggerResult(
            "called",
            ref.container,
            ref.name,
            reason,
            media=media,
            media_type=media_type,
            status_code=reply.status_code,
            job_id=job_id,
            status_url=body.get("status_url"),
            attempts=reply.attempts,
            response=reply.body,
        )
    reason = f"HTTP {reply.status_code} {reply.error_text}"
    log.error(
        "service refused the analysis, not retried: %s (container=%s blob=%s media=%s media_type=%s)",
        reason,
        ref.container,
        ref.name,
        media,
        media_type,
        extra={**extra, "status_code": reply.status_code},
    )
    return TriggerResult(
        "rejected",
        ref.container,
        ref.name,
        reason,
        media=media,
        media_type=media_type,
        status_code=reply.status_code,
        attempts=reply.attempts,
        response=reply.body,
    )
