"""Which uploaded blob starts which analysis, and the call that starts it.

This module is plain Python: ``function_app.py`` (Azure Functions) and
``local_watcher.py`` (Azurite, locally) both call into it, so the decision
logic and the HTTP call are the same everywhere.

For one blob the steps are:

1. blobs under ``processed/`` are our own outputs: skipped, so results never
   loop back into analysis; so are directory markers;
2. the media kind comes from the blob's first bytes, by the service's own
   rules (``media_rules``); when they are no image or video format, from
   what the upload claims (content type, else extension), so an empty or
   broken upload named as media still gets a job, and its job answers
   ``unreadable``; anything else is skipped;
3. posed or wild comes from the blob metadata ``media_type`` (``ip``,
   ``posed``, ``iw``, ``wild``; any case), else from the setting
   ``DEFAULT_MEDIA_TYPE`` (default ``ip``, i.e. posed: see README.md);
4. ``POST {SERVICE_URL}/analyse/<media>/<media_type>/<container>`` with the
   ``X-API-Key`` header.

5xx answers, 408/429 and connection errors are retried with exponential
backoff and jitter inside one invocation; once those retries are spent,
:class:`ServiceCallError` is raised so the Functions runtime (Event Grid
delivery retries, then its dead-letter destination) takes over. Any other 4xx
is logged with its reason and returned as a ``rejected`` outcome: retrying
would not change it. Calling twice for one blob is harmless because the
service is idempotent (same container, ETags and options give the same job).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping, Optional
from urllib.parse import quote, unquote, urlsplit

import requests
import tenacity
from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from media_rules import SNIFF_BYTES, is_processed, judge, parse_media_type

log = logging.getLogger("function_trigger")

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
METADATA_KEY = "media_type"
STORAGE_CONNECTION = "MediaStorage"

# HDFS-style directory markers on accounts with a hierarchical namespace.
_FOLDER_METADATA_KEY = "hdi_isfolder"

_SUBJECT_RE = re.compile(r"^/blobServices/default/containers/(?P<container>[^/]+)/blobs/(?P<blob>.+)$")


class TriggerConfigError(RuntimeError):
    """A setting is missing or invalid; the message names it."""


class ServiceCallError(RuntimeError):
    """The service could not be reached, or kept answering 5xx, after all retries.

    Raised (never swallowed) so the Functions runtime retries the event and
    finally dead-letters it.
    """

    def __init__(self, message: str, *, attempts: int, status_code: Optional[int] = None):
        super().__init__(message)
        self.attempts = attempts
        self.status_code = status_code


@dataclass(frozen=True)
class TriggerConfig:
    """Settings of the trigger, read from app settings (environment variables)."""

    service_url: str
    api_key: str
    default_media_type: str = "ip"
    max_attempts: int = 4
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 8.0
    # Event Grid waits 30 s for the function to answer, then counts the
    # delivery as failed and retries it: keep one invocation under that.
    retry_budget_seconds: float = 20.0
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 15.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.service_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TriggerConfigError(f"SERVICE_URL must be an http(s) URL, got {self.service_url!r}")
        if not self.api_key:
            raise TriggerConfigError("SERVICE_API_KEY is empty")
        if parse_media_type(self.default_media_type) is None:
            raise TriggerConfigError(
                f"DEFAULT_MEDIA_TYPE must be one of ip, posed, iw, wild; got {self.default_media_type!r}"
            )
        object.__setattr__(self, "default_media_type", self.default_media_type.lower())
        if self.max_attempts < 1:
            raise TriggerConfigError("SERVICE_MAX_ATTEMPTS must be at least 1")
        for name in ("backoff_initial_seconds", "backoff_max_seconds", "retry_budget_seconds",
                     "connect_timeout_seconds", "read_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise TriggerConfigError(f"{_ENV_NAMES[name]} must be positive")

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "TriggerConfig":
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for attr, name in _ENV_NAMES.items():
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            raw = raw.strip()
            if attr == "max_attempts":
                values[attr] = _parse(name, raw, int)
            elif attr.endswith("_seconds"):
                values[attr] = _parse(name, raw, float)
            else:
                values[attr] = raw
        for attr in ("service_url", "api_key"):
            if attr not in values:
                raise TriggerConfigError(f"{_ENV_NAMES[attr]} is not set")
        return cls(**values)


_ENV_NAMES = {
    "service_url": "SERVICE_URL",
    "api_key": "SERVICE_API_KEY",
    "default_media_type": "DEFAULT_MEDIA_TYPE",
    "max_attempts": "SERVICE_MAX_ATTEMPTS",
    "backoff_initial_seconds": "SERVICE_BACKOFF_SECONDS",
    "backoff_max_seconds": "SERVICE_BACKOFF_MAX_SECONDS",
    "retry_budget_seconds": "SERVICE_RETRY_BUDGET_SECONDS",
    "connect_timeout_seconds": "SERVICE_CONNECT_TIMEOUT_SECONDS",
    "read_timeout_seconds": "SERVICE_READ_TIMEOUT_SECONDS",
}


def _parse(name: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise TriggerConfigError(f"{name} must be a number, got {raw!r}") from None


def blob_service_from_env(env: Optional[Mapping[str, str]] = None, connection: str = STORAGE_CONNECTION):
    """A ``BlobServiceClient`` for the media storage account, from app settings.

    Same conventions as the Functions host's own connections, so one set of
    settings serves both:

    - ``<connection>``: a connection string (Azurite locally:
      ``UseDevelopmentStorage=true`` or a full connection string);
    - ``<connection>__blobServiceUri`` (or ``__serviceUri``, or
      ``__accountName``): identity-based, with ``DefaultAzureCredential``
      (the app's managed identity in Azure; ``<connection>__clientId`` picks a
      user-assigned one);
    - else ``AZURE_STORAGE_CONNECTION_STRING``, as the service uses.
    """
    from azure.storage.blob import BlobServiceClient

    env = os.environ if env is None else env
    conn_str = env.get(connection) or ""
    if conn_str.strip():
        return BlobServiceClient.from_connection_string(conn_str.strip())
    account_url = env.get(f"{connection}__blobServiceUri") or env.get(f"{connection}__serviceUri")
    account_name = env.get(f"{connection}__accountName")
    if not account_url and account_name:
        account_url = f"https://{account_name}.blob.core.windows.net"
    if account_url:
        from azure.identity import DefaultAzureCredential

        client_id = env.get(f"{connection}__clientId") or None
        credential = DefaultAzureCredential(managed_identity_client_id=client_id)
        return BlobServiceClient(account_url=account_url, credential=credential)
    fallback = env.get("AZURE_STORAGE_CONNECTION_STRING") or ""
    if fallback.strip():
        return BlobServiceClient.from_connection_string(fallback.strip())
    raise TriggerConfigError(
        f"no storage connection: set {connection}__blobServiceUri (identity-based, in Azure), "
        f"or {connection} / AZURE_STORAGE_CONNECTION_STRING (a connection string, e.g. Azurite)"
    )


@dataclass(frozen=True)
class BlobRef:
    """The blob an event is about. Its properties and content are read from
    storage (``read_blob``): events carry no metadata."""

    container: str
    name: str
    etag: Optional[str] = None
    event_id: Optional[str] = None


@dataclass(frozen=True)
class Outcome:
    """What the trigger did with one blob.

    ``action``: ``called`` (the service accepted: 202 new job, 200 existing
    job), ``skipped`` (not for analysis), ``rejected`` (the service, or the
    blob's metadata, said no; retrying would not help).
    """

    action: str
    container: str
    blob: str
    reason: str
    media: Optional[str] = None
    media_type: Optional[str] = None
    status_code: Optional[int] = None
    job_id: Optional[str] = None
    status_url: Optional[str] = None
    attempts: int = 0
    response: Optional[Mapping[str, Any]] = field(default=None, repr=False)


# --------------------------------------------------------------------------
# Parsing what the runtime hands us


def split_blob_url(url: str) -> tuple[str, str]:
    """``(container, blob)`` from a blob URL.

    Handles Azure's ``https://<account>.blob.core.windows.net/<c>/<b>`` and
    the emulator's path style ``http://127.0.0.1:10000/<account>/<c>/<b>``.
    """
    parts = urlsplit(url)
    path = unquote(parts.path).lstrip("/")
    host = (parts.hostname or "").lower()
    segments = path.split("/", 2 if _is_path_style(host) else 1)
    if _is_path_style(host):
        segments = segments[1:]
    if len(segments) != 2 or not segments[0] or not segments[1]:
        raise ValueError(f"not a blob URL: {url!r}")
    return segments[0], segments[1]


def _is_path_style(host: str) -> bool:
    """Emulators (Azurite) address accounts by path, not by host name."""
    if host in ("localhost", "host.docker.internal") or host.startswith("azurite"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def blob_ref_from_event(event: Any) -> tuple[Optional[BlobRef], str]:
    """The blob an Event Grid ``BlobCreated`` event is about.

    Accepts ``azure.functions.EventGridEvent`` (Event Grid schema) and
    ``azure.functions.CloudEvent`` (CloudEvents schema). Returns
    ``(None, reason)`` for events that are not about a created blob.
    """
    event_type = getattr(event, "event_type", None) or getattr(event, "type", None)
    if event_type != BLOB_CREATED:
        return None, f"event type {event_type!r} is not {BLOB_CREATED}"
    data = event.get_json() or {}
    if not isinstance(data, Mapping):
        return None, "event data is not an object"
    container = blob = None
    match = _SUBJECT_RE.match(getattr(event, "subject", None) or "")
    if match:
        container, blob = match.group("container"), match.group("blob")
    elif data.get("url"):
        container, blob = split_blob_url(str(data["url"]))
    else:
        return None, "event names no blob (no subject, no data.url)"
    if data.get("api") == "CreateFile":
        # Hierarchical-namespace accounts announce an empty file first and
        # a FlushWithClose event once its content is written.
        return None, "CreateFile event: the file has no content yet"
    return BlobRef(container, blob, etag=data.get("eTag"), event_id=getattr(event, "id", None)), ""


# --------------------------------------------------------------------------
# Decisions


def media_type_from_metadata(metadata: Optional[Mapping[str, str]], default: str) -> tuple[Optional[str], str]:
    """``(media_type, source)``; ``(None, reason)`` when the metadata value is unknown."""
    for key, value in (metadata or {}).items():
        if str(key).lower() == METADATA_KEY:
            chosen = str(value).strip().lower()
            if parse_media_type(chosen) is not None:
                return chosen, "metadata"
            return None, f"blob metadata {METADATA_KEY}={value!r} is not one of ip, posed, iw, wild"
    return default, "default"


# --------------------------------------------------------------------------
# Handlers


def handle_event(event: Any, *, config: TriggerConfig, blob_service: Any,
                 session: Optional[requests.Session] = None, sleep: Optional[Callable[[float], Any]] = None
                 ) -> Outcome:
    """Handle one Event Grid ``BlobCreated`` event (what ``function_app`` receives)."""
    ref, reason = blob_ref_from_event(event)
    if ref is None:
        extra = {"event_id": getattr(event, "id", None), "subject": getattr(event, "subject", None)}
        log.info("event skipped: %s", reason, extra=extra)
        return Outcome("skipped", container="", blob="", reason=reason)
    return handle_blob(ref, config=config, blob_service=blob_service, session=session, sleep=sleep)


def handle_blob(ref: BlobRef, *, config: TriggerConfig, blob_service: Any,
                session: Optional[requests.Session] = None, sleep: Optional[Callable[[float], Any]] = None
                ) -> Outcome:
    """Decide what to do with one blob and, for media, call the service."""
    extra = {"container": ref.container, "blob": ref.name, "event_id": ref.event_id}

    def skipped(reason: str, level: int = logging.INFO, **kw: Any) -> Outcome:
        log.log(level, "blob skipped: %s (container=%s blob=%s)", reason, ref.container, ref.name, extra=extra)
        return Outcome("skipped", ref.container, ref.name, reason, **kw)

    if is_processed(ref.name):
        # Every job writes several of these: not worth a line at INFO.
        return skipped("processed/ holds our own outputs", level=logging.DEBUG)
    blob = read_blob(blob_service, ref)
    if blob is None:
        return skipped("blob no longer exists")
    if str(blob.metadata.get(_FOLDER_METADATA_KEY, "")).lower() == "true":
        return skipped("directory marker")
    verdict = judge(ref.name, blob.content_type, blob.head)
    if verdict.kind is None:
        return skipped(f"not media (content type {blob.content_type!r}; its first bytes are no image or video)")
    media = verdict.kind.value

    media_type, source = media_type_from_metadata(blob.metadata, config.default_media_type)
    if media_type is None:
        log.error("blob rejected: %s (container=%s blob=%s)", source, ref.container, ref.name, extra=extra)
        return Outcome("rejected", ref.container, ref.name, source, media=media)

    return call_service(config, media, media_type, ref.container, blob=ref.name,
                        media_type_source=source, session=session, event_id=ref.event_id, sleep=sleep)


@dataclass(frozen=True)
class StoredBlob:
    """What the trigger reads of a blob: its properties and its first bytes."""

    metadata: Mapping[str, str]
    content_type: Optional[str]
    head: bytes


def read_blob(blob_service: Any, ref: BlobRef) -> Optional[StoredBlob]:
    """The blob's properties and first bytes; ``None`` if it is gone. Storage errors propagate (runtime retry)."""
    client = blob_service.get_blob_client(ref.container, ref.name)
    try:
        props = client.get_blob_properties()
        head = b""
        if props.size:
            # Pinned to the version whose properties we read; a newer one has its own event.
            head = client.download_blob(offset=0, length=min(SNIFF_BYTES, props.size), etag=props.etag,
                                        match_condition=MatchConditions.IfNotModified).readall()
    except (ResourceNotFoundError, ResourceModifiedError):
        return None
    return StoredBlob(dict(props.metadata or {}), props.content_settings.content_type, head)


# --------------------------------------------------------------------------
# The service call


class _Retryable(Exception):
    def __init__(self, reason: str, status_code: Optional[int] = None, retry_after: Optional[float] = None):
        super().__init__(reason)
        self.status_code = status_code
        self.retry_after = retry_after


class _Backoff(tenacity.wait.wait_base):
    """Exponential backoff with jitter; honours a ``Retry-After`` the service sends, capped."""

    def __init__(self, initial: float, maximum: float):
        self._initial = initial
        self._max = maximum

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        # initial, 2*initial, 4*initial ... plus up to one initial of jitter, capped.
        exponent = min(retry_state.attempt_number - 1, 30)
        delay = min(self._initial * 2 ** exponent + random.uniform(0, self._initial), self._max)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after:
            delay = max(delay, min(exc.retry_after, self._max))
        return delay


def _retry_after(resp: requests.Response) -> Optional[float]:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def analyse_url(service_url: str, media: str, media_type: str, container: str) -> str:
    return (f"{service_url.rstrip('/')}/analyse/{quote(media, safe='')}/"
            f"{quote(media_type, safe='')}/{quote(container, safe='')}")


def call_service(config: TriggerConfig, media: str, media_type: str, container: str, *,
                 blob: str = "", media_type_source: str = "", session: Optional[requests.Session] = None,
                 event_id: Optional[str] = None, sleep: Optional[Callable[[float], Any]] = None) -> Outcome:
    """``POST /analyse/<media>/<media_type>/<container>``, retrying transient failures.

    Returns ``called`` for 200/202, ``rejected`` for other 4xx (logged with
    the service's reason); raises :class:`ServiceCallError` once the retries
    for 5xx/408/429/connection errors are spent. ``sleep`` replaces
    ``time.sleep`` between attempts (the watcher's wakes up on shutdown).
    """
    http = session or requests
    url = analyse_url(config.service_url, media, media_type, container)
    extra = {"container": container, "blob": blob, "event_id": event_id, "media": media,
             "media_type": media_type}
    deadline = time.monotonic() + config.retry_budget_seconds
    attempts = 0

    def attempt() -> requests.Response:
        nonlocal attempts
        attempts += 1
        remaining = deadline - time.monotonic()
        timeout = (config.connect_timeout_seconds, max(1.0, min(config.read_timeout_seconds, remaining)))
        try:
            resp = http.post(url, headers={"X-API-Key": config.api_key, "Accept": "application/json",
                                           "User-Agent": "openface-function-trigger/1"},
                             timeout=timeout, allow_redirects=False)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise _Retryable(f"HTTP {resp.status_code} {_error_text(resp)}", resp.status_code, _retry_after(resp))
        return resp

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("service call failed, retrying in %.1fs (attempt %d of %d): %s (container=%s blob=%s)",
                    state.upcoming_sleep, state.attempt_number, config.max_attempts, exc, container, blob,
                    extra=extra)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(config.max_attempts)
        | tenacity.stop_before_delay(config.retry_budget_seconds),
        wait=_Backoff(config.backoff_initial_seconds, config.backoff_max_seconds),
        retry=tenacity.retry_if_exception_type(_Retryable),
        before_sleep=before_sleep,
        sleep=sleep or time.sleep,
        reraise=False,
    )
    try:
        resp = retrying(attempt)
    except tenacity.RetryError as exc:
        last = exc.last_attempt.exception()
        status = getattr(last, "status_code", None)
        message = (f"service call POST {url} failed after {attempts} attempt(s): {last} "
                   f"(container={container} blob={blob})")
        log.error(message, extra=extra)
        raise ServiceCallError(message, attempts=attempts, status_code=status) from last

    body = _json(resp)
    if resp.status_code in (200, 201, 202):
        job_id = body.get("job_id") if isinstance(body, Mapping) else None
        status_url = body.get("status_url") if isinstance(body, Mapping) else None
        reason = "new job" if resp.status_code == 202 else "job already exists"
        log.info("analysis requested: %s %s/%s for container=%s blob=%s -> HTTP %d job_id=%s (%s)",
                 reason, media, media_type, container, blob, resp.status_code, job_id,
                 f"media_type from {media_type_source}" if media_type_source else "",
                 extra={**extra, "status_code": resp.status_code, "job_id": job_id})
        return Outcome("called", container, blob, reason, media=media, media_type=media_type,
                       status_code=resp.status_code, job_id=job_id, status_url=status_url,
                       attempts=attempts, response=body if isinstance(body, Mapping) else None)

    reason = f"HTTP {resp.status_code} {_error_text(resp)}"
    log.error("service refused the analysis, not retried: %s (container=%s blob=%s media=%s media_type=%s)",
              reason, container, blob, media, media_type, extra={**extra, "status_code": resp.status_code})
    return Outcome("rejected", container, blob, reason, media=media, media_type=media_type,
                   status_code=resp.status_code, attempts=attempts,
                   response=body if isinstance(body, Mapping) else None)


def _json(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _error_text(resp: requests.Response) -> str:
    body = _json(resp)
    if isinstance(body, Mapping) and (body.get("error") or body.get("message")):
        return f"{body.get('error', '')}: {body.get('message', '')}".strip(": ")
    text = (resp.text or "").strip().replace("\n", " ")
    return text[:200] or (resp.reason or "")
