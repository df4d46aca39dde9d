"""Prometheus metrics of the web processes and of the worker.

Web: requests by route and status, and their latency, at ``GET /metrics``.
gunicorn runs several processes, so prometheus-client's multiprocess mode
gathers them: gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh
folder before any process starts, and marks a process dead when it exits.

Worker: jobs finished, media by outcome, OpenFace's run time, batch sizes,
jobs in flight and the queue's length, on its own port (METRICS_PORT).

Neither is behind the API key; docs/operations.md says how to keep them internal.
"""

from __future__ import annotations

import logging
import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

# -- web ---------------------------------------------------------------------

REQUESTS = Counter("openface_http_requests_total", "HTTP requests answered, by route and status",
                   ["method", "route", "status"])
LATENCY = Histogram("openface_http_request_seconds", "Time to answer an HTTP request, by route",
                    ["method", "route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

# -- worker ------------------------------------------------------------------

JOBS_FINISHED = Counter("openface_jobs_finished_total", "Jobs finished, by status", ["status"])
MEDIA = Counter("openface_media_total", "Media answered, by outcome", ["outcome"])
OPENFACE_SECONDS = Histogram("openface_run_seconds", "Wall time of one OpenFace process",
                             ["executable"], buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
BATCH_JOBS = Histogram("openface_batch_jobs", "Jobs in one batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
JOBS_IN_FLIGHT = Gauge("openface_jobs_in_flight", "Jobs the worker holds now")


def init_app(app: Flask) -> None:
    """Count and time every request, and serve ``GET /metrics`` (no key)."""

    @app.before_request
    def start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(_web_registry()), mimetype=CONTENT_TYPE_LATEST)


def _web_registry():
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY  # one process (tests with Flask's client)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


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
    start_http_server(port)
    log.info("metrics on port %d", port)
