"""HTTP routes. They only check, record and enqueue; the worker does the analysis."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request, url_for

from analysis.backends import Backends
from analysis.config import missing_executables
from analysis.job import Job, JobStatus
from analysis.logs import log_context
from analysis.names import is_valid_job_id, parse_media, parse_media_type
from analysis.options import Options
from analysis.sweep import Sweeper
from analysis.web import openapi
from analysis.web.auth import require_api_key
from analysis.web.errors import ApiError

log = logging.getLogger(__name__)
bp = Blueprint("analysis", __name__)
MAX_JOBS_LISTED = 100
_DOCUMENT = openapi.document()


# GET is kept because earlier callers used it; POST is the documented form.
@bp.route("/analyse/<media>/<media_type>/<name>", methods=["POST", "GET"])
@require_api_key
def analyse(media: str, media_type: str, name: str):
    media_kind = parse_media(media)
    options = Options.parse(
        media_kind, parse_media_type(media_type), request.args.get("faces"), request.args.get("outputs")
    )
    container = _upload_container(name)
    store, jobs = backends().store, backends().jobs
    with log_context(container=container):
        listing = store.list_inputs(container)
        job, created = jobs.create(Job.new(container, media_kind, options, listing.inputs, listing.has_results))
        with log_context(job_id=job.job_id):
            if created or job.status is JobStatus.FAILED:
                if not created:  # a failed job runs again when asked again
                    job = jobs.move(
                        job,
                        JobStatus.QUEUED,
                        error=None,
                        attempts=0,
                        runs_alone=False,
                        results=[],
                        outputs=[],
                        summary=None,
                        finished_at=None,
                        results_before=listing.has_results,
                    )
                _enqueue(job)
                log.info("job queued", extra={"media": media_kind.value, **options.metadata()})
                status = 202
            elif _sweeper().stale(job.status, job.alive_at):  # its message was lost: asking again finds it
                job = _sweeper().requeue(job)
                status = 202
            else:
                log.info("job exists", extra={"status": job.status.value})
                status = 200
    status_url = url_for("analysis.job_status", job_id=job.job_id)
    body = {"job_id": job.job_id, "status": job.status.value, "status_url": status_url}
    return jsonify(body), status, {"Location": status_url}


def backends() -> Backends:
    return current_app.extensions["backends"]


def _sweeper() -> Sweeper:
    settings = current_app.config["SETTINGS"]
    return Sweeper(backends().jobs, backends().queue, settings.job_requeue_seconds, settings.queue_visibility_seconds)


def _upload_container(name: str) -> str:
    """The container a caller named, if it is an upload container: never the records or Azure's own."""
    return current_app.config["SETTINGS"].upload_containers.check(name)


def _enqueue(job: Job) -> None:
    try:
        backends().queue.enqueue(job.job_id, {"record": job.to_document(), "etag": job.etag})
    except Exception:
        # Without a message the job would wait forever; mark it so a retry re-queues it.
        backends().jobs.move(job, JobStatus.FAILED, error="could not be queued; submit it again")
        raise


@bp.get("/jobs/<job_id>")
@require_api_key
def job_status(job_id: str):
    job = backends().jobs.get(job_id) if is_valid_job_id(job_id) else None
    if job is None:
        days = current_app.config["SETTINGS"].job_record_days
        raise ApiError(
            404,
            "job_not_found",
            f"no job with id '{job_id[:64]}'; job records are deleted {days} "
            "days after their last change (JOB_RECORD_DAYS)",
        )
    return jsonify(job.public())


@bp.get("/jobs")
@require_api_key
def jobs_for_container():
    """``GET /jobs?container=<name>[&limit=N]``: the container's jobs, newest first."""
    name = request.args.get("container")
    if not name:
        raise ApiError(400, "invalid_request", "name the upload container: GET /jobs?container=<name>")
    container = _upload_container(name)
    limit = request.args.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_JOBS_LISTED:
        raise ApiError(400, "invalid_request", f"limit must be a whole number from 1 to {MAX_JOBS_LISTED}")
    jobs = backends().jobs.for_container(container, int(limit))
    return jsonify(container=container, jobs=[job.public() for job in jobs])


@bp.before_app_request
def refuse_unknown_query_parameters():
    """A misspelt parameter is an error, not a silent default."""
    if request.url_rule is None or request.method in ("HEAD", "OPTIONS"):
        return
    allowed = openapi.query_parameters(_DOCUMENT, request.url_rule.rule, request.method)
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        takes = f"it takes {', '.join(sorted(allowed))}" if allowed else "it takes none"
        raise ApiError(400, "invalid_request", f"unknown query parameter(s) {', '.join(map(repr, unknown))}; {takes}")


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(_DOCUMENT)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    checks = {"storage": backends().storage_check()}
    missing = missing_executables(current_app.config["SETTINGS"].openface_bin_dir)
    checks["openface"] = "ok" if not missing else "missing " + ", ".join(missing)
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "not_ready", checks=checks), 200 if ready else 503
