"""Event Grid's ``BlobCreated`` events: the blob one is about, and making one as Event Grid would.

Accepts ``azure.functions.EventGridEvent`` (Event Grid schema) and
``azure.functions.CloudEvent`` (CloudEvents schema). The event names the
blob; what the blob is, is read from storage (``trigger.read_blob``): events
carry no metadata. The local watcher makes the events Azurite does not send
(``blob_created_event``).
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
LOCAL_TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local"
    "/providers/Microsoft.Storage/storageAccounts/{account}"
)

_SUBJECT_RE = re.compile(r"^/blobServices/default/containers/(?P<container>[^/]+)/blobs/(?P<blob>.+)$")


@dataclass(frozen=True)
class BlobRef:
    """The blob an event is about."""

    container: str
    name: str
    etag: str | None = None
    event_id: str | None = None


def split_blob_url(url: str) -> tuple[str, str]:
    """``(container, blob)`` from a blob URL.

    Handles Azure's ``https://<account>.blob.core.windows.net/<c>/<b>`` and
    the emulator's path style ``http://127.0.0.1:10000/<account>/<c>/<b>``.
    """
    parts = urlsplit(url)
    path = unquote(parts.path).lstrip("/")
    path_style = _is_path_style((parts.hostname or "").lower())
    segments = path.split("/", 2 if path_style else 1)
    if path_style:
        segments = segments[1:]
    if len(segments) != 2 or not segments[0] or not segments[1]:
        raise ValueError(f"not a blob URL: {url!r}")
    return segments[0], segments[1]


def _is_path_style(host: str) -> bool:
    """Emulators (Azurite) address accounts by path, not by host name."""
    if host in ("localhost", "host.docker.internal") or host.startswith("azurite"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def blob_ref_from_event(event: Any) -> tuple[BlobRef | None, str]:
    """The blob a ``BlobCreated`` event is about, or ``(None, reason)`` for any other event."""
    event_type = getattr(event, "event_type", None) or getattr(event, "type", None)
    if event_type != BLOB_CREATED:
        return None, f"event type {event_type!r} is not {BLOB_CREATED}"
    data = event.get_json() or {}
    if not isinstance(data, Mapping):
        return None, "event data is not an object"
    match = _SUBJECT_RE.match(getattr(event, "subject", None) or "")
    if match:
        container, blob = match.group("container"), match.group("blob")
    elif data.get("url"):
        container, blob = split_blob_url(str(data["url"]))
    else:
        return None, "event names no blob (no subject, no data.url)"
    if data.get("api") == "CreateFile":
        # Hierarchical-namespace accounts announce an empty file first and
        # a FlushWithClose event once its content is written.
        return None, "CreateFile event: the file has no content yet"
    return BlobRef(container, blob, etag=data.get("eTag"), event_id=getattr(event, "id", None)), ""


def blob_created_event(
    *,
    account: str,
    container: str,
    blob: str,
    url: str,
    etag: str,
    content_type: str | None,
    content_length: int,
    last_modified: datetime | None = None,
    api: str = "PutBlob",
) -> Any:
    """The ``BlobCreated`` event Event Grid would deliver, as the runtime decodes it.

    The JSON has the Event Grid schema's fields for a block-blob upload; it
    goes through ``azure.functions``' own Event Grid converter, so the handler
    receives the same ``azure.functions.EventGridEvent`` it gets in Azure.
    """
    request_id = str(uuid.uuid4())
    when = (last_modified or datetime.now(UTC)).astimezone(UTC)
    body = {
        "id": str(uuid.uuid4()),
        "topic": LOCAL_TOPIC.format(account=account),
        "subject": f"/blobServices/default/containers/{container}/blobs/{blob}",
        "eventType": BLOB_CREATED,
        "eventTime": when.isoformat().replace("+00:00", "Z"),
        "dataVersion": "",
        "metadataVersion": "1",
        "data": {
            "api": api,
            "clientRequestId": request_id,
            "requestId": request_id,
            "eTag": etag,
            "contentType": content_type or "application/octet-stream",
            "contentLength": content_length,
            "blobType": "BlockBlob",
            "url": url,
            "sequencer": f"{time.time_ns():032x}",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
    }
    return EventGridEventInConverter.decode(Datum(json.dumps(body), "json"), trigger_metadata={})
