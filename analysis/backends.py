"""The storage-backed pieces a process needs, built once from settings.

Hooked into Flask with ``init_app``; the worker builds its own.
"""

from __future__ import annotations

from flask import Flask, current_app

from analysis.config import Settings
from analysis.job import JobStore
from analysis.queue import AzureJobQueue
from analysis.storage import MediaStore, blob_service_client, queue_service_client


class Backends:
    def __init__(self, settings: Settings):
        self.settings = settings
        blobs = blob_service_client(settings)
        self.store = MediaStore(blobs)
        self.jobs = JobStore(blobs, settings.job_records_container)
        self.queue = AzureJobQueue(
            queue_service_client(settings), settings.job_queue_name, settings.poison_queue_name
        )

    def ensure(self) -> None:
        """Create the job records container and queues if they are missing."""
        self.jobs.ensure()
        self.queue.ensure()

    def ping(self) -> None:
        self.jobs.ping()
        self.queue.ping()

    def init_app(self, app: Flask) -> None:
        app.extensions["backends"] = self


def backends() -> Backends:
    return current_app.extensions["backends"]
