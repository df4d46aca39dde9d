"""Gunicorn settings for the web process.

Requests only validate, list blobs and enqueue, so they are short: analysis
runs in the worker process, never in a request.
"""

import os
import shutil
import tempfile

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = "gthread"
# A request lists one container and writes one queue message; 30 s is ample.
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
# On SIGTERM, let in-flight requests finish before the container stops.
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
accesslog = "-"
errorlog = "-"
# Both logs as JSON lines with the app's field names; access lines carry fields, not a string.
logger_class = "analysis.web.weblog.JsonLogger"
# gunicorn's control socket is not used; its default path is shared by every
# gunicorn of a user, so two services on one machine would fight over it.
control_socket_disable = True
# Prometheus counters of every worker process, summed by the master on WEB_METRICS_PORT
# (analysis/metrics.py): a fresh folder each start, set before any worker imports the app.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="openface-web-metrics-")
shutil.rmtree(_metrics_dir, ignore_errors=True)
os.makedirs(_metrics_dir)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def when_ready(server):
    # Metrics on an internal port, from the master: the public port has no /metrics.
    port = os.environ.get("WEB_METRICS_PORT")
    if port:
        from analysis.web.metrics import serve_web_metrics

        serve_web_metrics(int(port), os.environ.get("METRICS_HOST", "0.0.0.0"))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    shutil.rmtree(_metrics_dir, ignore_errors=True)


# Each worker builds its own storage clients: sockets must not cross a fork.
preload_app = False
# Gunicorn's worker heartbeat file: on a disk-backed /tmp in a container it can
# stall workers, so use memory when the container has it.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"
