"""The messages a worker holds, kept invisible by a heartbeat until each is let go.

While a batch runs, every message it took must stay hidden from other
workers: the heartbeat renews them all every third of the visibility
timeout, side by side and with short timeouts, so one slow call cannot let
the others lapse. Letting a message go (complete, release with a delay,
dead-letter, hand over) first takes it out of the heartbeat, under the lock
a beat holds, so a beat can never renew a message after it was released and
undo its retry delay. The storage call that lets it go then runs outside
the lock: messages of a batch are let go in parallel.

A renewal that finds the message gone (another receive took it after a
lapse) drops it from the lease: the job record's holder token then decides
who may settle the job (analysis/job.py).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from analysis.queue import Delivery, JobQueue, LeaseLapsed

log = logging.getLogger(__name__)

# Renewals at once: the messages of a full batch are renewed in one round trip or two.
RENEWERS = 8


class Lease:
    def __init__(self, queue: JobQueue, deliveries: list[Delivery], visibility_seconds: int):
        self.queue = queue
        self.seconds = visibility_seconds
        self._held = {delivery.message_id: delivery for delivery in deliveries}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        context = contextvars.copy_context()  # the thread's log lines keep the worker's context
        self._thread = threading.Thread(target=context.run, args=(self._run,), daemon=True)
        self._renewers = ThreadPoolExecutor(RENEWERS, thread_name_prefix="renew")

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._renewers.shutdown()

    def hold(self, delivery: Delivery) -> None:
        """Keep one more message hidden: a batch takes messages while it gathers."""
        with self._lock:
            self._held[delivery.message_id] = delivery

    def held(self) -> list[Delivery]:
        with self._lock:
            return list(self._held.values())

    def hand_over(self, delivery: Delivery, other: Lease) -> None:
        """Let ``other`` keep the message hidden from now on, never both renewing it."""
        self.drop(delivery)
        other.hold(delivery)

    def drop(self, delivery: Delivery) -> None:
        """Stop renewing the message, with no storage call: it is about to be another lease's.
        It stays hidden for what is left of its visibility, at least two thirds of it."""
        self._let_go(delivery)

    def complete(self, delivery: Delivery) -> None:
        self._let_go(delivery)
        self.queue.complete(delivery)

    def release(self, delivery: Delivery, delay_seconds: int = 0) -> None:
        self._let_go(delivery)
        self.queue.release(delivery, delay_seconds)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._let_go(delivery)
        self.queue.dead_letter(delivery, reason)

    def _let_go(self, delivery: Delivery) -> None:
        with self._lock:  # waits for a beat in progress; later beats skip it
            self._held.pop(delivery.message_id, None)

    def beat(self) -> None:
        """Renew every message still held, side by side."""
        with self._lock:
            held = list(self._held.values())
            for delivery, error in zip(held, self._renewers.map(self._renew, held)):
                if isinstance(error, LeaseLapsed):
                    self._held.pop(delivery.message_id, None)
                    log.warning(
                        "a held message was taken by another receive; its job's record decides who settles it",
                        extra={"job_id": delivery.job_id},
                    )
                elif error is not None:  # the next beat may succeed; the batch goes on meanwhile
                    log.warning("could not extend a message's visibility: %r", error, extra={"job_id": delivery.job_id})
        log.debug("heartbeat", extra={"messages": len(held)})

    def _renew(self, delivery: Delivery) -> Exception | None:
        try:
            self.queue.extend(delivery, self.seconds)
        except Exception as exc:
            return exc
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            self.beat()
