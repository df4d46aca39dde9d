"""Helpers for the function trigger tests: real media, and what the Functions runtime hands a function.

Event Grid payloads go through ``azure.functions``' own
converters, so the handler receives exactly the objects it gets in Azure.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import uuid
from datetime import UTC
from typing import Any

from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from azure.storage.blob import ContainerClient, ContentSettings
from blob_events import BLOB_CREATED
from service_client import ServiceClient
from trigger_settings import TriggerSettings

# --------------------------------------------------------------------------
# Media the service (and the OpenFace stand-in) accept as real


def jpeg_bytes(faces: int = 1) -> bytes:
    """A small real JPEG; the comment tells the OpenFace stand-in how many faces it shows."""
    from PIL import Image

    picture = Image.linear_gradient("L").convert("RGB").resize((64, 64))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", comment=f"openface-standin:faces={faces}".encode())
    return buffer.getvalue()


def png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").resize((32, 32)).save(buffer, "PNG")
    return buffer.getvalue()


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def mp4_bytes(frames: int = 5) -> bytes:
    """A minimal ISO-BMFF file (ftyp + moov); a free box tells the stand-in its frame count."""
    return (
        _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2avc1mp41")
        + _box(b"moov", _box(b"mvhd", bytes(100)))
        + _box(b"free", f"openface-standin:frames={frames}".encode())
    )


def upload(
    container: ContainerClient, name: str, data: bytes, *, content_type: str | None = None, metadata: dict | None = None
):
    settings = ContentSettings(content_type=content_type) if content_type else None
    container.upload_blob(name, data, overwrite=True, content_settings=settings, metadata=metadata)
    return container.get_blob_client(name).get_blob_properties()


# --------------------------------------------------------------------------
# What the Functions runtime hands a function


def event_grid_payload(
    container: ContainerClient, name: str, *, event_type: str = BLOB_CREATED, api: str = "PutBlob"
) -> dict:
    """The JSON Event Grid posts for a blob, in the Event Grid schema, from the blob's real properties."""
    props = container.get_blob_client(name).get_blob_properties()
    request_id = str(uuid.uuid4())
    return {
        "topic": (
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/tests"
            f"/providers/Microsoft.Storage/storageAccounts/{container.account_name}"
        ),
        "subject": f"/blobServices/default/containers/{container.container_name}/blobs/{name}",
        "eventType": event_type,
        "id": str(uuid.uuid4()),
        "data": {
            "api": api,
            "clientRequestId": request_id,
            "requestId": request_id,
            "eTag": props.etag,
            "contentType": props.content_settings.content_type,
            "contentLength": props.size,
            "blobType": "BlockBlob",
            "url": container.get_blob_client(name).url,
            "sequencer": "00000000000000000000000000000001000000000000abcd",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
        "dataVersion": "",
        "metadataVersion": "1",
        "eventTime": props.last_modified.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def decode_event(payload: dict) -> Any:
    """Decode one event as the runtime does for an ``eventGridTrigger`` binding."""
    return EventGridEventInConverter.decode(Datum(json.dumps(payload), "json"), trigger_metadata={})


def cloud_event_payload(container: ContainerClient, name: str) -> dict:
    """The same blob's event in the CloudEvents v1.0 schema."""
    grid = event_grid_payload(container, name)
    return {
        "specversion": "1.0",
        "id": grid["id"],
        "source": grid["topic"],
        "subject": grid["subject"],
        "type": grid["eventType"],
        "time": grid["eventTime"],
        "data": grid["data"],
    }


# --------------------------------------------------------------------------
# Configurations


def closed_port_url() -> str:
    """A URL nothing listens on: a handler that called it would fail."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def fast_client(url: str, api_key: str, **settings: Any) -> ServiceClient:
    """A service client with short retries, so tests of failures are quick."""
    values = dict(
        service_url=url,
        service_api_key=api_key,
        service_max_attempts=3,
        service_backoff_seconds=0.1,
        service_backoff_max_seconds=0.5,
        service_retry_budget_seconds=10,
        service_connect_timeout_seconds=2,
        service_read_timeout_seconds=10,
    )
    return ServiceClient(TriggerSettings(**{**values, **settings}))
