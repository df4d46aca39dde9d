"""Errors answered as JSON: ``{"error": <code>, "message": <what to do>}``."""

from __future__ import annotations

import logging

from azure.core.exceptions import AzureError
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from analysis.names import InvalidName
from analysis.storage import ContainerNotFound

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _answer(status: int, code: str, message: str):
    return jsonify(error=code, message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return _answer(exc.status, exc.code, exc.message)

    @app.errorhandler(InvalidName)
    def invalid_name(exc: InvalidName):
        return _answer(400, "invalid_request", str(exc))

    @app.errorhandler(ContainerNotFound)
    def container_not_found(exc: ContainerNotFound):
        return _answer(404, "container_not_found", f"container '{exc}' does not exist")

    @app.errorhandler(AzureError)
    def storage_unavailable(exc: AzureError):
        log.exception("storage request failed")
        return _answer(503, "storage_unavailable", "storage could not be reached; try again shortly")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return _answer(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return _answer(500, "internal_error", "unexpected error; see the service logs")
