"""Errors answered as JSON: ``{"error": <code>, "message": <what to do>}``."""

from __future__ import annotations

import logging

from azure.core.exceptions import AzureError
from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from analysis.names import ContainerNotAllowed, InvalidName
from analysis.storage import ContainerNotFound

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _answer(status: int, code: str, message: str):
    return jsonify(error=code, message=message), status


def route_list() -> str:
    """``POST /analyse/<media>/<media_type>/<name>, GET /jobs, ...``: what a lost caller can use."""
    routes = []
    for rule in current_app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        methods = "/".join(sorted(rule.methods - {"HEAD", "OPTIONS"}))
        routes.append(f"{methods} {rule.rule}")
    return ", ".join(sorted(routes, key=lambda route: route.split(" ", 1)[1]))


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return _answer(exc.status, exc.code, exc.message)

    @app.errorhandler(InvalidName)
    def invalid_name(exc: InvalidName):
        return _answer(400, "invalid_request", str(exc))

    @app.errorhandler(ContainerNotAllowed)
    def container_not_allowed(exc: ContainerNotAllowed):
        return _answer(403, "container_not_allowed", str(exc))

    @app.errorhandler(ContainerNotFound)
    def container_not_found(exc: ContainerNotFound):
        return _answer(404, "container_not_found", f"container '{exc}' does not exist")

    @app.errorhandler(AzureError)
    def storage_unavailable(exc: AzureError):
        log.exception("storage request failed")
        return _answer(503, "storage_unavailable", "storage could not be reached; try again shortly")

    @app.errorhandler(NotFound)
    def no_such_route(exc: NotFound):
        return _answer(404, "not_found", f"no route {request.method} {request.path}; the routes are: {route_list()}")

    @app.errorhandler(MethodNotAllowed)
    def wrong_method(exc: MethodNotAllowed):
        allowed = ", ".join(sorted(set(exc.valid_methods or []) - {"HEAD", "OPTIONS"}))
        return _answer(
            405,
            "method_not_allowed",
            f"{request.path} takes {allowed}, not {request.method}; the routes are: {route_list()}",
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return _answer(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return _answer(500, "internal_error", "unexpected error; see the service logs")
