"""The messages a worker holds, kept invisible by a heartbeat until each is let go.

While a batch runs, every message it took must stay hidden from other
workers: the heartbeat renews them all every third of the visibility
timeout. Letting a message go (complete, release with a delay, dead-letter)
first takes it out of the heartbeat, under the lock a beat holds, so a beat
can never renew a message after it was released and undo its retry delay.
The storage call that lets it go then runs outside the lock: messages of a
batch are let go in parallel.
"""

from __future__ import annotations

import contextvars
import logging
import threading

from analysis.queue import Delivery, JobQueue

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, queue: JobQueue, deliveries: list[Delivery], visibility_seconds: int):
        self.queue = queue
        self.seconds = visibility_seconds
        self._held = {delivery.message_id: delivery for delivery in deliveries}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        context = contextvars.copy_context()  # the thread's log lines keep the worker's context
        self._thread = threading.Thread(target=context.run, args=(self._run,), daemon=True)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def hold(self, delivery: Delivery) -> None:
        """Keep one more message hidden: a batch takes messages while it gathers."""
        with self._lock:
            self._held[delivery.message_id] = delivery

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
        """Renew every message still held."""
        with self._lock:
            for delivery in list(self._held.values()):
                try:
                    self.queue.extend(delivery, self.seconds)
                except Exception:  # the next beat may succeed; the batch goes on meanwhile
                    log.warning("could not extend a message's visibility", exc_info=True,
                                extra={"job_id": delivery.job_id})
        log.debug("heartbeat")

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            self.beat()
