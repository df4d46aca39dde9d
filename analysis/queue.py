"""The job queue: a small interface, backed by an Azure Storage Queue.

A message carries a job id, and the job's record as it was queued when that
is small, so a worker can claim a job on its first delivery with one write;
the record in storage is the one that counts. A message lives until it is
taken (no time to live), stays invisible while a worker holds it and
reappears if the worker dies, so a job is never lost. After too many
deliveries it moves to the poison queue.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Protocol

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.queue import QueueMessage, QueueServiceClient

# Azure Storage Queues hand out at most 32 messages per receive.
MAX_PER_RECEIVE = 32
# A message holds up to 64 KiB; a record larger than this stays out of it.
RECORD_IN_MESSAGE_BYTES = 32 * 1024
# A renewal must not hold up the others, nor outlast the lease it renews: short timeouts, one retry.
RENEWAL_OPTIONS = {"timeout": 5, "connection_timeout": 5, "read_timeout": 5, "retry_total": 1}

log = logging.getLogger(__name__)


class LeaseLapsed(RuntimeError):
    """The message is no longer ours: it was taken by another receive, or deleted."""


@dataclass
class Delivery:
    """One received message. ``pop_receipt`` changes every time it is extended."""

    job_id: str
    dequeue_count: int
    message_id: str
    pop_receipt: str
    queued: dict | None = None  # {"record": ..., "etag": ...}: the job record as it was queued, if carried


class JobQueue(Protocol):
    def enqueue(self, job_id: str, queued: dict | None = None) -> None: ...
    def receive(self, max_messages: int, visibility_seconds: int) -> list[Delivery]: ...
    def extend(self, delivery: Delivery, visibility_seconds: int) -> None: ...
    def release(self, delivery: Delivery, delay_seconds: int = 0) -> None: ...
    def complete(self, delivery: Delivery) -> None: ...
    def dead_letter(self, delivery: Delivery, reason: str) -> None: ...
    def approximate_length(self) -> int: ...


class AzureJobQueue:
    def __init__(self, service: QueueServiceClient, name: str, poison_name: str):
        self.queue = service.get_queue_client(name)
        self.poison = service.get_queue_client(poison_name)

    def ensure(self) -> None:
        for client in (self.queue, self.poison):
            try:
                client.create_queue()
            except ResourceExistsError:
                pass

    def ping(self) -> None:
        self.queue.get_queue_properties()

    def approximate_length(self) -> int:
        return self.queue.get_queue_properties().approximate_message_count

    def enqueue(self, job_id: str, queued: dict | None = None) -> None:
        """Queue the job; ``queued`` (its record and ETag as queued) rides along when small enough."""
        content = json.dumps({"job_id": job_id, "queued": queued})
        if len(content) > RECORD_IN_MESSAGE_BYTES:
            content = json.dumps({"job_id": job_id})
        # Without time_to_live=-1 the SDK's default (7 days) would drop jobs of a long backlog.
        self.queue.send_message(content, time_to_live=-1)

    def receive(self, max_messages: int, visibility_seconds: int) -> list[Delivery]:
        """The messages waiting now, up to ``max_messages``; never waits for more to arrive."""
        deliveries: list[Delivery] = []
        while len(deliveries) < max_messages:
            want = min(max_messages - len(deliveries), MAX_PER_RECEIVE)
            messages = list(
                self.queue.receive_messages(
                    messages_per_page=want, max_messages=want, visibility_timeout=visibility_seconds
                )
            )
            deliveries += [delivery for delivery in map(self._delivery, messages) if delivery is not None]
            if len(messages) < want:
                break
        return deliveries

    def _delivery(self, message: QueueMessage) -> Delivery | None:
        try:
            body = json.loads(message.content)
            job_id = body["job_id"]
        except (ValueError, KeyError, TypeError):
            # Not one of ours: keep it for a person to look at, out of the way.
            self.poison.send_message(message.content, time_to_live=-1)
            self.queue.delete_message(message.id, message.pop_receipt)
            return None
        queued = body.get("queued")
        return Delivery(
            job_id, message.dequeue_count, message.id, message.pop_receipt, queued if isinstance(queued, dict) else None
        )

    def extend(self, delivery: Delivery, visibility_seconds: int) -> None:
        """LeaseLapsed when the message is no longer ours."""
        try:
            self._set_visibility(delivery, visibility_seconds, **RENEWAL_OPTIONS)
        except HttpResponseError as exc:
            if _not_ours(exc):
                raise LeaseLapsed(delivery.message_id) from None
            raise

    def release(self, delivery: Delivery, delay_seconds: int = 0) -> None:
        try:
            self._set_visibility(delivery, delay_seconds)
        except HttpResponseError as exc:
            if not _not_ours(exc):
                raise
            log.info("message already gone or taken again; nothing to release", extra={"job_id": delivery.job_id})

    def complete(self, delivery: Delivery) -> None:
        try:
            self.queue.delete_message(delivery.message_id, delivery.pop_receipt)
        except HttpResponseError as exc:  # deleted already, or taken by another receive since: theirs now
            if not _not_ours(exc):
                raise
            log.info("message already gone or taken again; nothing to delete", extra={"job_id": delivery.job_id})

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.poison.send_message(
            json.dumps({"job_id": delivery.job_id, "reason": reason, "dequeue_count": delivery.dequeue_count}),
            time_to_live=-1,  # kept until a person looks
        )
        self.complete(delivery)

    def _set_visibility(self, delivery: Delivery, seconds: int, **options) -> None:
        # One call at a time per delivery (analysis/worker/lease.py sees to it): each changes the receipt.
        updated = self.queue.update_message(
            delivery.message_id, delivery.pop_receipt, visibility_timeout=seconds, **options
        )
        delivery.pop_receipt = updated.pop_receipt


def _not_ours(error: HttpResponseError) -> bool:
    """The message was deleted, or another receive holds it now (its receipt changed)."""
    return error.status_code == 404 or error.error_code in ("MessageNotFound", "PopReceiptMismatch")
