"""API keys: ``X-API-Key`` must equal one of ``API_KEYS``, compared in constant time."""

from __future__ import annotations

import hmac
from functools import wraps

from flask import current_app, request

from analysis.web.errors import ApiError

HEADER = "X-API-Key"


def key_is_valid(supplied: str, keys: list[str]) -> bool:
    supplied_bytes = supplied.encode()
    # Compare against every key, so timing says nothing about which one matched.
    matches = [hmac.compare_digest(supplied_bytes, key.encode()) for key in keys]
    return any(matches)


def require_api_key(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        keys = current_app.config["SETTINGS"].api_key_list
        if not key_is_valid(request.headers.get(HEADER, ""), keys):
            raise ApiError(401, "unauthorized", f"missing or wrong {HEADER} header")
        return view(*args, **kwargs)

    return wrapper
