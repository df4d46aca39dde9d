"""gunicorn's own logs as JSON lines, shaped like the app's (gunicorn.conf.py: ``logger_class``)."""

from __future__ import annotations

from gunicorn import glogging

from analysis.keys import fingerprint
from analysis.logs import json_formatter


class JsonLogger(glogging.Logger):
    """The error log (start-up, workers, bad requests, exceptions) and the access log as JSON."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        # gunicorn has just built its handlers with plain-text formatters; keep the
        # handlers (and the streams they write to) and change only the format.
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(json_formatter())

    def access(self, resp, req, environ, request_time) -> None:
        # Fields rather than access_log_format's one string. Of the request headers only the
        # user agent is logged; the key only as its fingerprint, never itself.
        if not self.access_log_enabled:
            return
        method, path, status = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), _status(resp)
        key = environ.get("HTTP_X_API_KEY")
        self.access_log.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "query": environ.get("QUERY_STRING") or None,
                "status": status,
                "bytes": getattr(resp, "sent", None),
                "duration_ms": round(request_time.seconds * 1000 + request_time.microseconds / 1000, 3),
                "remote_addr": environ.get("REMOTE_ADDR"),
                "user_agent": environ.get("HTTP_USER_AGENT"),
                "key_fingerprint": fingerprint(key) if key else None,
            },
        )


def _status(resp) -> int | None:
    """The status code: gunicorn keeps it as "404 NOT FOUND", and as None if no response began."""
    try:
        return int(str(resp.status).split(None, 1)[0])
    except ValueError:
        return None
