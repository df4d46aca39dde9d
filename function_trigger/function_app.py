"""Azure Functions app (Python v2 programming model): uploads start analyses.

One function, ``on_media_uploaded``, with an Event Grid trigger. An Event
Grid subscription on the media storage account delivers
``Microsoft.Storage.BlobCreated`` events for every container (uploads come in
per-UUID containers, which a blob trigger's fixed container path cannot
express); the decision lives in ``trigger.py``, shared with the local
watcher, the call in ``service_client.py``, the settings in
``trigger_settings.py``. See README.md for the subscription, settings and
retries.
"""

from __future__ import annotations

import logging
import threading

import azure.functions as func
import trigger
import trigger_settings
from service_client import ServiceClient

app = func.FunctionApp()

_lock = threading.Lock()
_state: dict = {}


def _clients() -> tuple[ServiceClient, object]:
    """The service client and the storage client, built on first use and reused across invocations."""
    with _lock:
        if not _state:
            settings = trigger_settings.load()
            _state["service"] = ServiceClient(settings)
            _state["blob_service"] = trigger_settings.storage_client(settings)
        return _state["service"], _state["blob_service"]


@app.function_name(name="on_media_uploaded")
@app.event_grid_trigger(arg_name="event")
def on_media_uploaded(event: func.EventGridEvent) -> None:
    """Start the analysis for one uploaded blob.

    Skipped blobs and 4xx answers return normally (Event Grid counts the
    delivery as done). A service that stays unreachable or keeps answering
    5xx raises ``service_client.ServiceCallError``: Event Grid then redelivers
    with its own backoff and, once the subscription's retry policy is spent,
    dead-letters the event.
    """
    service, blob_service = _clients()
    result = trigger.handle_event(event, service=service, blob_service=blob_service)
    logging.getLogger("function_trigger").debug("result: %s", result)
