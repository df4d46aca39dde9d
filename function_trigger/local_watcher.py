#!/usr/bin/env python
"""Local stand-in for Event Grid: notices uploads in Azurite and starts analyses.

Azurite emits no Event Grid events, so locally nothing would fire the
function. This watcher polls the storage account (every container, every
``WATCH_INTERVAL_SECONDS``), and for each upload that has no answer yet (no
``processed/`` summary for its current ETag, so an overwrite counts as a new
upload, as in Azure) it builds the ``Microsoft.Storage.BlobCreated`` event
Event Grid would deliver, decodes it into an ``azure.functions.EventGridEvent``
the way the Functions runtime does, and calls the same handler as
``function_app.py``. Uploads made before it started, or while it was down,
are delivered too.

Delivery mimics Event Grid too: a handler that raises (service down after its
own retries) is redelivered later with growing delays, and after
``WATCH_MAX_DELIVERIES`` attempts the event is "dead-lettered" (logged at
ERROR and dropped).

Run: ``bin/watcher``. Settings (environment, read by
``trigger_settings.WatcherSettings``): the function app's own (storage as
``MediaStorage`` or ``AZURE_STORAGE_CONNECTION_STRING``, ``SERVICE_URL``,
``SERVICE_API_KEY``, which falls back to the first of the service's
``API_KEYS``, and every ``SERVICE_*``/``DEFAULT_MEDIA_TYPE``), plus
``WATCH_INTERVAL_SECONDS`` (2), ``WATCH_RETRY_SECONDS`` (10, first redelivery
delay, doubling up to 300), ``WATCH_MAX_DELIVERIES`` (10) and ``LOG_LEVEL``
(INFO).

``--container NAME`` (repeatable) limits the watch to some containers;
``--once`` scans once and exits; ``--ready-file PATH`` is written once the
first scan is done (``bin/local-run`` waits for it). Stops cleanly on SIGTERM
or SIGINT.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import trigger
import trigger_settings
from azure.core.exceptions import AzureError, ResourceNotFoundError
from blob_events import blob_created_event
from service_client import ServiceClient

from media_rules import is_processed

log = logging.getLogger("function_trigger.watcher")

SUMMARY_SUFFIX = ".summary.json"


@dataclass
class _Pending:
    deliveries: int
    due: float


@dataclass(frozen=True)
class EventDelivery:
    """One event handed to the handler, and what came of it."""

    container: str
    blob: str
    etag: str
    event: Any
    result: trigger.TriggerResult | None = None
    error: BaseException | None = None
    dead_lettered: bool = False


def answered_versions(blobs: list[Any]) -> set[tuple[str, str]]:
    """``(blob name, ETag)`` of every upload that has a ``processed/`` summary.

    The service writes ``<stem>.summary.json`` last for every media it takes
    on, whatever the outcome, with the source blob's name and ETag in its
    metadata: its presence is the answer to that version of the upload.
    """
    answered = set()
    for blob in blobs:
        metadata = blob.metadata or {}
        if blob.name.endswith(SUMMARY_SUFFIX) and "source_blob" in metadata and "source_etag" in metadata:
            answered.add((unquote(metadata["source_blob"]), metadata["source_etag"].strip('"')))
    return answered


class Watcher:
    """Polls one storage account and hands each unanswered upload's event to ``handler``.

    What to deliver is decided by what storage holds, not by what the watcher
    saw before: an upload without a summary for its current ETag has not been
    answered, whether it came before the watcher started, while it was down,
    or in the same second. The memory kept here only stops one process from
    delivering the same version twice while its job runs.
    """

    def __init__(
        self,
        blob_service: Any,
        handler: Callable[[Any], trigger.TriggerResult],
        *,
        retry_seconds: float = 10.0,
        retry_max_seconds: float = 300.0,
        max_deliveries: int = 10,
        containers: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        container_problem: Callable[[str], str | None] = lambda name: None,
    ):
        self.blob_service = blob_service
        self.containers = set(containers) if containers else None  # None: every upload container
        self.container_problem = container_problem  # why a container holds no uploads (the records...)
        self.handler = handler
        self.retry_seconds = retry_seconds
        self.retry_max_seconds = retry_max_seconds
        self.max_deliveries = max_deliveries
        self.clock = clock
        self._handled: dict[tuple[str, str], str] = {}  # (container, blob) -> ETag this process handled
        self._pending: dict[tuple[str, str, str], _Pending] = {}

    # -- scanning ---------------------------------------------------------

    def _scan(self) -> dict[tuple[str, str], Any]:
        """Every upload without an answer: ``{(container, name): BlobProperties}``.

        Blobs under ``processed/`` are never delivered, as the Event Grid
        subscription's filter keeps them from the function in Azure.
        """
        found: dict[tuple[str, str], Any] = {}
        for container in self.blob_service.list_containers():
            if self.containers is not None and container.name not in self.containers:
                continue
            if self.container_problem(container.name):
                continue  # the service's own, or Azure's: never listed
            client = self.blob_service.get_container_client(container.name)
            try:
                blobs = list(client.list_blobs(include=["metadata"]))
            except ResourceNotFoundError:
                continue  # deleted while we listed
            answered = answered_versions([b for b in blobs if is_processed(b.name)])
            for blob in blobs:
                if not is_processed(blob.name) and (blob.name, blob.etag.strip('"')) not in answered:
                    found[(container.name, blob.name)] = blob
        return found

    def poll_once(self) -> list[EventDelivery]:
        """One scan; delivers each unanswered upload not handled yet (or due for redelivery)."""
        found = self._scan()
        now = self.clock()
        deliveries = []
        for key, props in sorted(found.items(), key=lambda item: (item[1].last_modified, item[0])):
            etag = props.etag
            if self._handled.get(key) == etag:
                continue
            pending = self._pending.get((*key, etag))
            if pending is not None and pending.due > now:
                continue
            deliveries.append(self._deliver(key, props, pending))
        # Forget what is answered, gone or overwritten, and its pending redeliveries.
        self._handled = {key: etag for key, etag in self._handled.items() if key in found}
        self._pending = {
            pkey: pending
            for pkey, pending in self._pending.items()
            if pkey[:2] in found and found[pkey[:2]].etag == pkey[2]
        }
        return deliveries

    def _deliver(self, key: tuple[str, str], props: Any, pending: _Pending | None) -> EventDelivery:
        container, name = key
        extra = {"container": container, "blob": name}
        blob_client = self.blob_service.get_blob_client(container, name)
        event = blob_created_event(
            account=self.blob_service.account_name,
            container=container,
            blob=name,
            url=blob_client.url,
            etag=props.etag,
            content_type=props.content_settings.content_type,
            content_length=props.size,
            last_modified=props.last_modified,
        )
        deliveries = (pending.deliveries if pending else 0) + 1
        log.info("unanswered upload: delivering BlobCreated event %s (delivery %d)", event.id, deliveries, extra=extra)
        try:
            result = self.handler(event)
        except Exception as exc:  # noqa: BLE001 - every failure is redelivered, as Event Grid does
            if deliveries >= self.max_deliveries:
                log.error("dead-lettered after %d deliveries: %s", deliveries, _first_line(exc), extra=extra)
                self._handled[key] = props.etag
                self._pending.pop((*key, props.etag), None)
                return EventDelivery(container, name, props.etag, event, error=exc, dead_lettered=True)
            delay = min(self.retry_seconds * 2 ** (deliveries - 1), self.retry_max_seconds)
            self._pending[(*key, props.etag)] = _Pending(deliveries, self.clock() + delay)
            log.warning(
                "delivery %d failed, redelivering in %.0fs: %s", deliveries, delay, _first_line(exc), extra=extra
            )
            return EventDelivery(container, name, props.etag, event, error=exc)
        self._handled[key] = props.etag
        self._pending.pop((*key, props.etag), None)
        log.info(
            "delivered: %s (%s)",
            result.action,
            result.reason,
            extra={**extra, "action": result.action, "job_id": result.job_id, "status_code": result.status_code},
        )
        return EventDelivery(container, name, props.etag, event, result=result)

    # -- loop -------------------------------------------------------------

    def run(self, stop: threading.Event, interval: float, on_first_scan: Callable[[], Any] = lambda: None) -> None:
        scanned = False
        while not stop.is_set():
            try:
                self.poll_once()
                if not scanned:
                    scanned = True
                    on_first_scan()
            except AzureError as exc:
                log.warning("storage scan failed, retrying in %.1fs: %s", interval, _first_line(exc))
            stop.wait(interval)
        log.info("watcher stopped")


def _first_line(exc: BaseException) -> str:
    """Storage errors carry the whole XML answer; one line is enough in a log."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


# --------------------------------------------------------------------------
# Command line


class _BlobFields(logging.Filter):
    """Every line carries ``container`` and ``blob`` (null when not about one blob)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in ("container", "blob"):
            if not hasattr(record, name):
                setattr(record, name, None)
        return True


def setup_logging(level: str = "INFO") -> None:
    from pythonjsonlogger.json import JsonFormatter

    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_BlobFields())
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}{container}{blob}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The Azure SDK logs every HTTP request at INFO: too chatty for a poller.
    logging.getLogger("azure").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="scan once, deliver, and exit")
    parser.add_argument(
        "--interval", type=float, default=None, help="seconds between scans (default: WATCH_INTERVAL_SECONDS or 2)"
    )
    parser.add_argument(
        "--container",
        action="append",
        dest="containers",
        metavar="NAME",
        help="watch only this container (repeatable; default: every container)",
    )
    parser.add_argument("--ready-file", type=Path, metavar="PATH", help="write this file once the first scan is done")
    args = parser.parse_args(argv)

    setup_logging(os.environ.get("LOG_LEVEL", "INFO"))
    try:
        settings = trigger_settings.load(trigger_settings.WatcherSettings)
        blob_service = trigger_settings.storage_client(settings)
    except trigger_settings.TriggerSettingsError as exc:
        log.error("%s", exc)
        return 2
    interval = args.interval or settings.watch_interval_seconds

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Backoff sleeps end early on shutdown, so a stop never waits out a retry budget.
    service = ServiceClient(settings, sleep=stop.wait)
    handler = functools.partial(trigger.handle_event, service=service, blob_service=blob_service)
    watcher = Watcher(
        blob_service,
        handler,
        retry_seconds=settings.watch_retry_seconds,
        max_deliveries=settings.watch_max_deliveries,
        containers=args.containers,
        container_problem=settings.container_problem,
    )
    log.info(
        "watching storage account %s: calling %s for uploads without an answer "
        "(default media type %s, scan every %.1fs)",
        blob_service.account_name,
        settings.service_url,
        settings.default_media_type,
        interval,
    )
    if args.once:
        watcher.poll_once()
        return 0

    def ready() -> None:
        log.info("first scan done")
        if args.ready_file:
            args.ready_file.write_text(f"{os.getpid()}\n")

    watcher.run(stop, interval, on_first_scan=ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
