"""Azure Functions app (Python v2 programming model): uploads start analyses.

One function, ``on_media_uploaded``, with an Event Grid trigger. An Event
Grid subscription on the media storage account delivers
``Microsoft.Storage.BlobCreated`` events for every container (uploads come in
per-UUID containers, which a blob trigger's fixed container path cannot
express); the decision and the service call live in ``trigger.py``, shared
with the local watcher. See README.md for the subscription, settings and
retries.
"""

from __future__ import annotations

import logging
import threading

import azure.functions as func
import requests

import trigger

app = func.FunctionApp()

_lock = threading.Lock()
_state: dict = {}


def _clients() -> tuple[trigger.TriggerConfig, object, requests.Session]:
    """Settings and clients, built on first use and reused across invocations."""
    with _lock:
        if not _state:
            config = trigger.TriggerConfig.from_env()
            _state["config"] = config
            _state["blob_service"] = trigger.blob_service_from_env()
            _state["session"] = requests.Session()
        return _state["config"], _state["blob_service"], _state["session"]


@app.function_name(name="on_media_uploaded")
@app.event_grid_trigger(arg_name="event")
def on_media_uploaded(event: func.EventGridEvent) -> None:
    """Start the analysis for one uploaded blob.

    Skipped blobs and 4xx answers return normally (Event Grid counts the
    delivery as done). A service that stays unreachable or keeps answering
    5xx raises ``trigger.ServiceCallError``: Event Grid then redelivers with
    its own backoff and, once the subscription's retry policy is spent,
    dead-letters the event.
    """
    config, blob_service, session = _clients()
    outcome = trigger.handle_event(event, config=config, blob_service=blob_service, session=session)
    logging.getLogger("function_trigger").debug("outcome: %s", outcome)
