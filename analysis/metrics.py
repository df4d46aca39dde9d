"""Prometheus metrics of the worker, on its own ``METRICS_PORT`` (the web's are in analysis/web/metrics.py).

Jobs finished, media by outcome, OpenFace's run time, engine requests and
starts, batch sizes, jobs in flight and the queue's length. Every label value
comes from a fixed set, so no caller can add series. docs/operations.md says
how Prometheus or Azure Monitor scrapes them.
"""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)


JOBS_FINISHED = Counter("openface_jobs_finished_total", "Jobs finished, by status", ["status"])
MEDIA = Counter("openface_media_total", "Media answered, by outcome", ["outcome"])
OPENFACE_SECONDS = Histogram(
    "openface_run_seconds",
    "Wall time of one OpenFace process",
    ["executable"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
ENGINE_REQUEST_SECONDS = Histogram(
    "openface_engine_request_seconds",
    "Wall time of one media in a resident engine",
    ["mode"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
ENGINE_STARTS = Counter("openface_engine_starts_total", "Resident engines started: the first ones and each replacement")
BATCH_JOBS = Histogram("openface_batch_jobs", "Jobs in one batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
JOBS_IN_FLIGHT = Gauge("openface_jobs_in_flight", "Jobs the worker holds now")


class _QueueLength:
    """The queue's approximate length, asked of storage when scraped."""

    def __init__(self, queue):
        self.queue = queue

    def collect(self):
        gauge = GaugeMetricFamily("openface_queue_messages", "Messages in the job queue (approximate)")
        try:
            gauge.add_metric([], self.queue.approximate_length())
        except Exception:  # storage unreachable: leave the gauge out rather than fail the scrape
            log.warning("could not read the queue's length", exc_info=True)
            return []
        return [gauge]


def serve_worker_metrics(port: int, queue) -> None:
    """The worker's metrics on ``port`` (a thread of prometheus-client's own)."""
    REGISTRY.register(_QueueLength(queue))
    start_http_server(port, registry=REGISTRY)
    log.info("metrics on port %d", port)
