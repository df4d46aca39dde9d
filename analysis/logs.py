"""JSON logs. Every line written while a job runs carries its job id, container and blob."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator

from pythonjsonlogger.json import JsonFormatter

_CONTEXT_FIELDS = ("job_id", "container", "blob")
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context")


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        current = _context.get({})
        for field in _CONTEXT_FIELDS:
            if not hasattr(record, field):
                setattr(record, field, current.get(field))
        return True


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add fields (job_id, container, blob) to every log line inside the block."""
    token = _context.set({**_context.get({}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def json_formatter(*fields: str) -> JsonFormatter:
    """One JSON object per line: time, level, logger, message, then ``fields`` (null when unset).

    Anything passed as ``extra=`` is added too. The app and gunicorn (analysis/web/weblog.py)
    both use this, so every line of a process has the same shape.
    """
    return JsonFormatter(
        ["asctime", "levelname", "name", "message", *fields],
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter(*_CONTEXT_FIELDS))
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Python warnings (a library's FutureWarning, say) would otherwise be plain text on stderr.
    logging.captureWarnings(True)
    # The SDK logs every HTTP request at INFO; that drowns the job's own lines.
    logging.getLogger("azure").setLevel(logging.WARNING)
