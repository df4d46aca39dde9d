"""Prometheus metrics of the web processes, served on an internal port only.

Requests by method, route and status, and their latency. gunicorn runs
several processes, so prometheus-client's multiprocess mode gathers them:
gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh folder before
any process starts, marks a process dead when it exits, and its master serves
the sum on ``WEB_METRICS_PORT``, never on the public port. Every label value
comes from a fixed set, so no client can add series.
"""

from __future__ import annotations

import logging
import os
import time
from http import HTTPStatus

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "openface_http_requests_total", "HTTP requests answered, by route and status", ["method", "route", "status"]
)
LATENCY = Histogram(
    "openface_http_request_seconds",
    "Time to answer an HTTP request, by route",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Label values a request may bring; anything else is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUSES = frozenset(str(status.value) for status in HTTPStatus)


def request_labels(method: str, rule: str | None, status: int) -> tuple[str, str, str]:
    """(method, route template, status), each from a fixed set."""
    status_text = str(status)
    return (
        method if method in METHODS else "other",
        rule or "unmatched",
        status_text if status_text in STATUSES else "other",
    )


def init_app(app: Flask) -> None:
    """Count and time every request; the numbers are served by gunicorn's master (serve_web_metrics)."""

    @app.before_request
    def start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        method, route, status = request_labels(
            request.method, request.url_rule and request.url_rule.rule, response.status_code
        )
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
