"""The call that starts an analysis: ``POST /analyse/<media>/<media_type>/<container>``.

Transient failures (connection errors, timeouts, 5xx, 408, 429) are retried
with exponential backoff and jitter, honouring a ``Retry-After`` up to the
cap, within SERVICE_MAX_ATTEMPTS and SERVICE_RETRY_BUDGET_SECONDS. When they
are spent, ServiceCallError is raised so that the Functions runtime (Event
Grid's redelivery, then its dead-letter destination) takes over. Any other
answer is returned as it is: the caller decides what it means.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

import requests
import tenacity
from trigger_settings import TriggerSettings

log = logging.getLogger("function_trigger")

USER_AGENT = "openface-function-trigger/1"


class ServiceCallError(RuntimeError):
    """The service could not be reached, or kept failing, after every retry.

    Raised, never swallowed, so the runtime retries the event and finally dead-letters it.
    """

    def __init__(self, message: str, *, attempts: int, status_code: int | None = None):
        super().__init__(message)
        self.attempts = attempts
        self.status_code = status_code


@dataclass(frozen=True)
class ServiceReply:
    """The service's final answer to one call."""

    status_code: int
    body: Mapping[str, Any] | None
    error_text: str  # the service's error code and message, for a log line
    attempts: int


class _Retryable(Exception):
    def __init__(self, reason: str, status_code: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.status_code = status_code
        self.retry_after = retry_after


class _Backoff(tenacity.wait.wait_base):
    """initial, 2×initial, 4×initial… plus up to one initial of jitter, capped; ``Retry-After`` counts too."""

    def __init__(self, initial: float, maximum: float):
        self._initial = initial
        self._max = maximum

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exponent = min(retry_state.attempt_number - 1, 30)
        delay = min(self._initial * 2**exponent + random.uniform(0, self._initial), self._max)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after:
            delay = max(delay, min(exc.retry_after, self._max))
        return delay


class ServiceClient:
    """Calls the service with the settings' key, URL and retry rules.

    ``sleep`` replaces ``time.sleep`` between attempts (the watcher's wakes up on shutdown).
    """

    def __init__(
        self,
        settings: TriggerSettings,
        session: requests.Session | None = None,
        sleep: Callable[[float], Any] | None = None,
    ):
        self.settings = settings
        self.http = session or requests.Session()
        self.sleep = sleep or time.sleep

    def analyse(
        self,
        media: str,
        media_type: str,
        container: str,
        log_extra: Mapping[str, Any],
        options: Mapping[str, str] | None = None,
    ) -> ServiceReply:
        """The service's answer; ServiceCallError once the retries for transient failures are spent.

        ``options`` are the query parameters ``faces`` and ``outputs``.
        """
        url = analyse_url(self.settings.service_url, media, media_type, container, options)
        deadline = time.monotonic() + self.settings.service_retry_budget_seconds
        retrying = self._retrying(log_extra)
        try:
            response = retrying(self._post, url, deadline)
        except tenacity.RetryError as exc:
            last = exc.last_attempt.exception()
            attempts = exc.last_attempt.attempt_number
            message = (
                f"service call POST {url} failed after {attempts} attempt(s): {last} "
                f"(container={container} blob={log_extra.get('blob')})"
            )
            log.error(message, extra=log_extra)
            raise ServiceCallError(message, attempts=attempts, status_code=getattr(last, "status_code", None)) from last
        body = _json(response)
        return ServiceReply(
            response.status_code,
            body if isinstance(body, Mapping) else None,
            _error_text(response),
            retrying.statistics["attempt_number"],
        )

    def _retrying(self, log_extra: Mapping[str, Any]) -> tenacity.Retrying:
        settings = self.settings

        def before_sleep(state: tenacity.RetryCallState) -> None:
            log.warning(
                "service call failed, retrying in %.1fs (attempt %d of %d): %s (container=%s blob=%s)",
                state.upcoming_sleep,
                state.attempt_number,
                settings.service_max_attempts,
                state.outcome.exception(),
                log_extra.get("container"),
                log_extra.get("blob"),
                extra=log_extra,
            )

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(settings.service_max_attempts)
            | tenacity.stop_before_delay(settings.service_retry_budget_seconds),
            wait=_Backoff(settings.service_backoff_seconds, settings.service_backoff_max_seconds),
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=False,
        )

    def _post(self, url: str, deadline: float) -> requests.Response:
        """One attempt; raises _Retryable for what a later attempt may get past."""
        settings = self.settings
        read_timeout = max(1.0, min(settings.service_read_timeout_seconds, deadline - time.monotonic()))
        try:
            response = self.http.post(
                url,
                timeout=(settings.service_connect_timeout_seconds, read_timeout),
                allow_redirects=False,
                headers={"X-API-Key": settings.service_api_key, "Accept": "application/json", "User-Agent": USER_AGENT},
            )
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise _Retryable(
                f"HTTP {response.status_code} {_error_text(response)}", response.status_code, _retry_after(response)
            )
        return response


def analyse_url(
    service_url: str, media: str, media_type: str, container: str, options: Mapping[str, str] | None = None
) -> str:
    url = (
        f"{service_url.rstrip('/')}/analyse/{quote(media, safe='')}/"
        f"{quote(media_type, safe='')}/{quote(container, safe='')}"
    )
    return f"{url}?{urlencode(sorted(options.items()))}" if options else url


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_text(response: requests.Response) -> str:
    body = _json(response)
    if isinstance(body, Mapping) and (body.get("error") or body.get("message")):
        return f"{body.get('error', '')}: {body.get('message', '')}".strip(": ")
    text = (response.text or "").strip().replace("\n", " ")
    return text[:200] or (response.reason or "")
