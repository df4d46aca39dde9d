"""Prometheus metrics of the web processes and of the worker, each on an internal port.

Web: requests by method, route and status, and their latency. gunicorn runs
several processes, so prometheus-client's multiprocess mode gathers them:
gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh folder before
any process starts, marks a process dead when it exits, and its master serves
the sum on ``WEB_METRICS_PORT``, never on the public port.

Worker: jobs finished, media by outcome, OpenFace's run time, batch sizes,
jobs in flight and the queue's length, on its own ``METRICS_PORT``.

Every label value comes from a fixed set, so no caller can add series.
docs/operations.md says how Prometheus or Azure Monitor scrapes them.
"""

from __future__ import annotations

import logging
import os
import time
from http import HTTPStatus

from flask import Flask, Response, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server
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
ENGINE_REQUEST_SECONDS = Histogram("openface_engine_request_seconds", "Wall time of one media in a resident engine",
                                   ["mode"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800))
ENGINE_STARTS = Counter("openface_engine_starts_total", "Resident engines started: the first ones and each replacement")
BATCH_JOBS = Histogram("openface_batch_jobs", "Jobs in one batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
JOBS_IN_FLIGHT = Gauge("openface_jobs_in_flight", "Jobs the worker holds now")


# Label values a request may bring; anything else is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUSES = frozenset(str(status.value) for status in HTTPStatus)


def request_labels(method: str, rule: str | None, status: int) -> tuple[str, str, str]:
    """(method, route template, status), each from a fixed set."""
    status_text = str(status)
    return (method if method in METHODS else "other", rule or "unmatched",
            status_text if status_text in STATUSES else "other")


def init_app(app: Flask) -> None:
    """Count and time every request; the numbers are served by gunicorn's master (serve_web_metrics)."""

    @app.before_request
    def start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        method, route, status = request_labels(request.method, request.url_rule and request.url_rule.rule,
                                               response.status_code)
        REQUESTS.labels(method, route, status).inc()
        started = g.get("metrics_started")
        if started is not None:
            LATENCY.labels(method, route).observe(time.perf_counter() - started)
        return response


def serve_web_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Every web process's numbers, summed, on ``port`` (from gunicorn's master: gunicorn.conf.py)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, os.environ["PROMETHEUS_MULTIPROC_DIR"])
    start_http_server(port, host, registry=registry)
    log.info("web metrics on port %d", port)


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
