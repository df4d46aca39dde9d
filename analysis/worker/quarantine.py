"""Jobs whose worker died while running them: each runs again alone, one at a time.

When a worker dies mid-batch (SIGKILL, eviction, a media that took it down),
every job of the batch comes back still ``running`` in its record, its
holder silent. Run together again, one poison file would take them all down
again, until each had spent every attempt. So such a job goes into this
line instead of a batch: its message is kept hidden here without a claim
(no attempt spent), and the worker runs the line's jobs one by one, each in
a batch of its own. A death then costs only the job that caused it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from analysis.queue import Delivery, JobQueue
from analysis.worker.lease import Lease

log = logging.getLogger(__name__)


class Quarantine:
    """Use as a context manager around the worker's run: its lease renews the waiting messages."""

    def __init__(self, queue: JobQueue, visibility_seconds: int):
        self.lease = Lease(queue, [], visibility_seconds)
        self._waiting: deque[Delivery] = deque()
        self._lock = threading.Lock()

    def __enter__(self) -> Quarantine:
        self.lease.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            waiting, self._waiting = list(self._waiting), deque()
        for delivery in waiting:  # for the next worker, which puts them in its own line
            try:
                self.lease.release(delivery)
            except Exception:  # it reappears when its visibility runs out
                log.warning("could not release a waiting message", exc_info=True, extra={"job_id": delivery.job_id})
        self.lease.__exit__(*exc)

    def admit(self, delivery: Delivery, lease: Lease) -> None:
        """Take the message over from a batch's ``lease``; its job waits for its turn."""
        lease.hand_over(delivery, self.lease)
        with self._lock:
            self._waiting.append(delivery)
        log.warning(
            "job was running when its worker died; it runs again alone, in turn",
            extra={"job_id": delivery.job_id, "waiting": len(self)},
        )

    def next(self) -> Delivery | None:
        """The next job's message, no longer renewed here: the caller's batch holds it from now on."""
        with self._lock:
            if not self._waiting:
                return None
            delivery = self._waiting.popleft()
        self.lease.drop(delivery)
        return delivery

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)
