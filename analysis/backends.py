"""The storage-backed pieces a process needs, built once from settings.

Hooked into Flask with ``init_app`` (the routes find it in ``app.extensions``);
the worker builds its own. Neither creates storage unless asked (``ensure``):
the deployment does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from analysis.config import Settings
from analysis.job import JobStore
from analysis.queue import AzureJobQueue
from analysis.storage import MediaStore, blob_service_client, queue_service_client

# /readyz is polled by every probe and load balancer; storage is asked at most this often.
READY_CHECK_SECONDS = 5.0


class Backends:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._clock = clock
        self._checked: tuple[float, str] | None = None  # (when, what the storage check said)
        blobs = blob_service_client(settings)
        self.store = MediaStore(blobs)
        self.jobs = JobStore(blobs, settings.job_records_container)
        self.queue = AzureJobQueue(queue_service_client(settings), settings.job_queue_name, settings.poison_queue_name)

    def ensure(self) -> None:
        """Create the job records container and queues if they are missing."""
        self.jobs.ensure()
        self.queue.ensure()

    def ping(self) -> None:
        self.jobs.ping()
        self.queue.ping()

    def storage_check(self) -> str:
        """``ok`` or why storage is unreachable, asked of storage at most every READY_CHECK_SECONDS."""
        now = self._clock()
        if self._checked is None or now - self._checked[0] >= READY_CHECK_SECONDS:
            try:
                self.ping()
                answer = "ok"
            except Exception as exc:
                answer = f"unreachable: {type(exc).__name__}"
            self._checked = (now, answer)
        return self._checked[1]

    def init_app(self, app) -> None:
        app.extensions["backends"] = self
